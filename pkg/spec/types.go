// Package spec is the ScheduledJob: the one shape of a job everywhere — a
// YAML jobs file for local runs, objects in a cluster, a struct in Go. It
// holds the type, its defaults and its validation, and turns specs into the
// engine's jobs.Definitions through a Catalog of kinds.
//
// The spec names every kind as a field (so that one schema, and the CRD,
// describe them all), but it knows none of their rules: each kind is a
// package that registers a Kind in the Catalog, which validates its field
// and builds its work. Errors name the job and the field (FieldError), so a
// command can print one line per problem.
package spec

import (
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The spec's apiVersion and kind.
const (
	APIVersion = "leasecron.io/v1alpha1"
	KindName   = "ScheduledJob"
)

// ScheduledJob is one job.
type ScheduledJob struct {
	metav1.TypeMeta `json:",inline"`
	// metadata.name is the job's name in the ledger: a DNS-1123 label.
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              JobSpec `json:"spec"`
	// Status is written by the leader only (a cluster's ScheduledJobs);
	// a jobs file has none.
	Status ScheduledJobStatus `json:"status,omitempty"`
}

// ScheduledJobList is a list of ScheduledJobs.
type ScheduledJobList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ScheduledJob `json:"items"`
}

// ScheduledJobStatus is what the leader last saw of a job, from its ledger.
type ScheduledJobStatus struct {
	// ObservedGeneration is the spec's generation the status describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// LastScheduleTime is the latest slot that started.
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// LastSuccessfulTime is the latest slot that succeeded.
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`
	// NextScheduleTime is the next slot, unless suspended.
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
	// LastFailure is the message of the latest slot that failed for good
	// (secrets redacted), and LastFailureTime that slot.
	LastFailure     string       `json:"lastFailure,omitempty"`
	LastFailureTime *metav1.Time `json:"lastFailureTime,omitempty"`
	// LastTrigger is the last value of the leasecron.io/trigger annotation
	// that ran a slot, and LastTriggerTime when.
	LastTrigger     string       `json:"lastTrigger,omitempty"`
	LastTriggerTime *metav1.Time `json:"lastTriggerTime,omitempty"`
	// Conditions: Ready (False with a reason when the controller refuses
	// the spec), Suspended, Failing.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types and reasons of a ScheduledJob's status.
const (
	ConditionReady     = "Ready"
	ConditionSuspended = "Suspended"
	ConditionFailing   = "Failing"
	// TriggerAnnotation: a new value runs one slot now, through the ledger.
	TriggerAnnotation = "leasecron.io/trigger"
)

// JobSpec says when a job runs, how, and what it does: exactly one kind.
type JobSpec struct {
	// Schedule is a cron expression (5 fields, or 6 with seconds first), or
	// a descriptor such as @daily or @every 1h.
	Schedule string `json:"schedule"`
	// TimeZone is the IANA zone of the schedule and of the slot's date.
	// Default: the controller's --timezone.
	TimeZone string `json:"timeZone,omitempty"`
	// Suspend stops new slots; those that pass meanwhile are reported as
	// missed, not caught up.
	Suspend bool `json:"suspend,omitempty"`
	// CatchUp bounds what a new leader runs of the slots it missed.
	CatchUp *CatchUp `json:"catchUp,omitempty"`
	// Timeout bounds one attempt. Default: the controller's --job-timeout.
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// Retries shape the attempts of a failed slot.
	Retries *Retries `json:"retries,omitempty"`

	// The kinds: exactly one is set.

	// DailyStats is the built-in statistics job.
	DailyStats *DailyStats `json:"dailyStats,omitempty"`
	// SQL runs statements in the ledger's transaction.
	SQL *SQL `json:"sql,omitempty"`
	// HTTP sends one request per slot, with an Idempotency-Key.
	HTTP *HTTP `json:"http,omitempty"`
	// Command runs a program per slot, as a child of the leader.
	Command *Command `json:"command,omitempty"`
	// KubernetesJob creates one batch/v1 Job per slot.
	KubernetesJob *KubernetesJob `json:"kubernetesJob,omitempty"`
}

// KubernetesJob is the kubernetesJob kind.
type KubernetesJob struct {
	// Template is the Job each slot creates, in the ScheduledJob's
	// namespace, owned by it; the slot context is added to every
	// container's env.
	Template batchv1.JobTemplateSpec `json:"template"`
	// SuccessfulJobsHistoryLimit is how many succeeded Jobs are kept.
	// Default 3.
	SuccessfulJobsHistoryLimit *int32 `json:"successfulJobsHistoryLimit,omitempty"`
	// FailedJobsHistoryLimit is how many failed Jobs are kept. Default 1.
	FailedJobsHistoryLimit *int32 `json:"failedJobsHistoryLimit,omitempty"`
}

// CatchUp bounds catch-up.
type CatchUp struct {
	// Window: slots older than this are missed. Default --catch-up-window.
	Window *metav1.Duration `json:"window,omitempty"`
	// Limit: at most this many of the most recent missed slots run.
	// Default --catch-up-limit.
	Limit *int32 `json:"limit,omitempty"`
}

// Retries shape the attempts of a failed slot.
type Retries struct {
	// Limit is how many attempts a slot gets at most, the first included
	// (1: no retry). Default: as many as fit before the slot's deadline.
	Limit *int32 `json:"limit,omitempty"`
	// Backoff is the capped exponential wait between attempts.
	Backoff *Backoff `json:"backoff,omitempty"`
}

// Backoff is a capped exponential backoff.
type Backoff struct {
	// Initial is the first wait. Default 1s.
	Initial *metav1.Duration `json:"initial,omitempty"`
	// Max caps the wait. Default 1m.
	Max *metav1.Duration `json:"max,omitempty"`
}

// DailyStats is the dailyStats kind: it has no settings.
type DailyStats struct{}

// SQL is the sql kind.
type SQL struct {
	// Statements run in order, in the transaction that marks the slot
	// succeeded, with the slot context as named parameters: @slot,
	// @slot_date, @prev_slot, @job, @key.
	Statements []string `json:"statements"`
}

// HTTP is the http kind.
type HTTP struct {
	// URL is absolute http(s); a Go template over the slot context.
	URL string `json:"url"`
	// Method defaults to POST.
	Method string `json:"method,omitempty"`
	// Headers are sent on every attempt; values are templates.
	Headers map[string]string `json:"headers,omitempty"`
	// HeadersFrom are headers whose values are read, at every attempt, from
	// a file (a mounted Secret) or an environment variable; never logged.
	HeadersFrom []HeaderFrom `json:"headersFrom,omitempty"`
	// Body is the request body; a template.
	Body string `json:"body,omitempty"`
	// SuccessCodes are the statuses that count as success. Default: 200-299.
	SuccessCodes []int32 `json:"successCodes,omitempty"`
	// Timeout bounds one request. Default: the job's timeout.
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// FollowRedirects follows 3xx responses (default: a 3xx is the answer).
	FollowRedirects bool `json:"followRedirects,omitempty"`
}

// HeaderFrom is a header whose value comes from a file or an env var.
type HeaderFrom struct {
	// Name is the header's name.
	Name string `json:"name"`
	// File is a file whose content (trailing newline trimmed) is the value.
	File string `json:"file,omitempty"`
	// Env is an environment variable whose value is the value.
	Env string `json:"env,omitempty"`
	// Prefix is put before the value, such as "Bearer ".
	Prefix string `json:"prefix,omitempty"`
}

// Command is the command kind.
type Command struct {
	// Args is the program and its arguments (no shell: use ["sh", "-c",
	// "..."] for one).
	Args []string `json:"args"`
	// Env is added to the program's environment, after the slot context
	// (LEASECRON_SLOT, …).
	Env []EnvVar `json:"env,omitempty"`
	// WorkingDir is the program's working directory. Default: the
	// controller's.
	WorkingDir string `json:"workingDir,omitempty"`
	// GracePeriod is how long the program has after SIGTERM, when its
	// attempt's time is up, before SIGKILL. Default 10s.
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`
}

// EnvVar is one environment variable of a command: a value, or a value read
// at every attempt from a file (a mounted Secret) or from the controller's
// own environment.
type EnvVar struct {
	// Name is the variable's name.
	Name string `json:"name"`
	// Value is its value, in clear: no secrets here.
	Value string `json:"value,omitempty"`
	// File is a file whose content (trailing newline trimmed) is the value.
	File string `json:"file,omitempty"`
	// Env is a variable of the controller's environment whose value is the
	// value.
	Env string `json:"env,omitempty"`
}

// Kinds returns the names of the kinds set in s, in field order.
func (s *JobSpec) Kinds() []string {
	var k []string
	if s.DailyStats != nil {
		k = append(k, "dailyStats")
	}
	if s.SQL != nil {
		k = append(k, "sql")
	}
	if s.HTTP != nil {
		k = append(k, "http")
	}
	if s.Command != nil {
		k = append(k, "command")
	}
	if s.KubernetesJob != nil {
		k = append(k, "kubernetesJob")
	}
	return k
}
