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
//
// +kubebuilder:object:generate=true
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=scheduledjobs,singular=scheduledjob,shortName=sj,categories=leasecron
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="Suspend",type=boolean,JSONPath=`.spec.suspend`
// +kubebuilder:printcolumn:name="Last Success",type=date,JSONPath=`.status.lastSuccessfulTime`
// +kubebuilder:printcolumn:name="Next",type=string,JSONPath=`.status.nextScheduleTime`,description="the next slot (a time, not a date column: those print <invalid> for the future)"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: it is the job's name in the ledger, a DNS-1123 label"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, such as nightly-rollup"
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
//
// +kubebuilder:object:generate=true
// +kubebuilder:object:root=true
type ScheduledJobList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ScheduledJob `json:"items"`
}

// ScheduledJobStatus is what the leader last saw of a job, from its ledger.
//
// +kubebuilder:object:generate=true
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
	// that ran a slot, and LastTriggerTime that slot: when the leader saw
	// the value, to the millisecond and never on a whole second, so it is
	// never one of the schedule's slots.
	LastTrigger     string            `json:"lastTrigger,omitempty"`
	LastTriggerTime *metav1.MicroTime `json:"lastTriggerTime,omitempty"`
	// Conditions: Ready (False with a reason when the controller refuses
	// the spec), Suspended, Failing.
	// +listType=map
	// +listMapKey=type
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
//
// +kubebuilder:object:generate=true
// +kubebuilder:validation:XValidation:rule="has(self.dailyStats) || has(self.sql) || has(self.http) || has(self.command) || has(self.kubernetesJob)",message="no kind: set exactly one of dailyStats, sql, http, command, kubernetesJob"
// +kubebuilder:validation:XValidation:rule="[has(self.dailyStats), has(self.sql), has(self.http), has(self.command), has(self.kubernetesJob)].filter(k, k).size() <= 1",message="two kinds: set exactly one of dailyStats, sql, http, command, kubernetesJob"
type JobSpec struct {
	// Schedule is a cron expression (5 fields, or 6 with seconds first), or
	// a descriptor such as @daily or @every 1h.
	// +kubebuilder:validation:MaxLength=1024
	Schedule string `json:"schedule"`
	// TimeZone is the IANA zone of the schedule and of the slot's date.
	// Default: the controller's --timezone.
	// +kubebuilder:validation:MaxLength=64
	TimeZone string `json:"timeZone,omitempty"`
	// Suspend stops new slots; those that pass meanwhile are reported as
	// missed, not caught up.
	// +kubebuilder:default=false
	Suspend bool `json:"suspend,omitempty"`
	// CatchUp bounds what a new leader runs of the slots it missed.
	CatchUp *CatchUp `json:"catchUp,omitempty"`
	// Timeout bounds one attempt. Default: the controller's --job-timeout.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s or 10m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// Retries shape the attempts of a failed slot.
	Retries *Retries `json:"retries,omitempty"`
	// HistoryRetention is how long the job's finished ledger rows are kept,
	// counted from their slot; 0s keeps them forever. The last succeeded
	// slot and running rows are always kept, and a slot whose row was
	// pruned is never run again. Default: the controller's
	// --history-retention.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="must be 0s (keep forever) or a positive duration such as 168h"
	HistoryRetention *metav1.Duration `json:"historyRetention,omitempty"`

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
//
// +kubebuilder:object:generate=true
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
//
// +kubebuilder:object:generate=true
type CatchUp struct {
	// Window: slots older than this are missed. Default --catch-up-window.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s or 10m"
	Window *metav1.Duration `json:"window,omitempty"`
	// Limit: at most this many of the most recent missed slots run.
	// Default --catch-up-limit.
	// +kubebuilder:validation:Minimum=1
	Limit *int32 `json:"limit,omitempty"`
}

// Retries shape the attempts of a failed slot.
//
// +kubebuilder:object:generate=true
type Retries struct {
	// Limit is how many attempts a slot gets at most, the first included
	// (1: no retry). Default: as many as fit before the slot's deadline.
	// +kubebuilder:validation:Minimum=1
	Limit *int32 `json:"limit,omitempty"`
	// Backoff is the capped exponential wait between attempts.
	Backoff *Backoff `json:"backoff,omitempty"`
}

// Backoff is a capped exponential backoff.
//
// +kubebuilder:object:generate=true
// +kubebuilder:validation:XValidation:rule="!has(self.initial) || !has(self.max) || duration(self.max) >= duration(self.initial)",message="max is below initial: make max at least initial"
type Backoff struct {
	// Initial is the first wait. Default 1s.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s or 10m"
	Initial *metav1.Duration `json:"initial,omitempty"`
	// Max caps the wait. Default 1m.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s or 10m"
	Max *metav1.Duration `json:"max,omitempty"`
}

// DailyStats is the dailyStats kind: it has no settings.
//
// +kubebuilder:object:generate=true
type DailyStats struct{}

// SQL is the sql kind.
//
// +kubebuilder:object:generate=true
type SQL struct {
	// Statements run in order, in the transaction that marks the slot
	// succeeded, with the slot context as named parameters: @slot,
	// @slot_date, @prev_slot, @job, @key.
	// +kubebuilder:validation:MinItems=1
	Statements []string `json:"statements"`
}

// HTTP is the http kind.
//
// +kubebuilder:object:generate=true
type HTTP struct {
	// URL is absolute http(s); a Go template over the slot context.
	// +kubebuilder:validation:XValidation:rule="self.matches('^(?i)https?://') || self.matches('^[^:]*[{][{]')",message="must be an absolute http:// or https:// URL, such as https://hooks.example.com/nightly"
	URL string `json:"url"`
	// Method defaults to POST.
	// +kubebuilder:validation:Pattern=`^([-!#$%&'*+.^_|~0-9A-Za-z\x60]+)?$`
	Method string `json:"method,omitempty"`
	// Headers are sent on every attempt; values are templates.
	Headers map[string]string `json:"headers,omitempty"`
	// HeadersFrom are headers whose values are read, at every attempt, from
	// a file (a mounted Secret) or an environment variable; never logged.
	// +listType=map
	// +listMapKey=name
	HeadersFrom []HeaderFrom `json:"headersFrom,omitempty"`
	// Body is the request body; a template.
	Body string `json:"body,omitempty"`
	// SuccessCodes are the statuses that count as success. Default: 200-299.
	// +kubebuilder:validation:items:Minimum=100
	// +kubebuilder:validation:items:Maximum=599
	SuccessCodes []int32 `json:"successCodes,omitempty"`
	// Timeout bounds one request. Default: the job's timeout.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s or 10m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// FollowRedirects follows 3xx responses (default: a 3xx is the answer).
	FollowRedirects bool `json:"followRedirects,omitempty"`
}

// HeaderFrom is a header whose value comes from a file or an env var.
//
// +kubebuilder:object:generate=true
// +kubebuilder:validation:XValidation:rule="(has(self.file) && self.file.size() > 0) != (has(self.env) && self.env.size() > 0)",message="set exactly one of file (a mounted Secret's path) and env (an environment variable)"
type HeaderFrom struct {
	// Name is the header's name.
	// +kubebuilder:validation:Pattern=`^[-!#$%&'*+.^_|~0-9A-Za-z\x60]+$`
	Name string `json:"name"`
	// File is a file whose content (trailing newline trimmed) is the value.
	File string `json:"file,omitempty"`
	// Env is an environment variable whose value is the value.
	Env string `json:"env,omitempty"`
	// Prefix is put before the value, such as "Bearer ".
	Prefix string `json:"prefix,omitempty"`
}

// Command is the command kind.
//
// +kubebuilder:object:generate=true
type Command struct {
	// Args is the program and its arguments (no shell: use ["sh", "-c",
	// "..."] for one).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:XValidation:rule="self.size() == 0 || self[0].size() > 0",message="the program (args[0]) is empty: give its name on the controller's PATH or its path"
	Args []string `json:"args"`
	// Env is added to the program's environment, after the slot context
	// (LEASECRON_SLOT, …).
	// +listType=map
	// +listMapKey=name
	Env []EnvVar `json:"env,omitempty"`
	// WorkingDir is the program's working directory. Default: the
	// controller's.
	WorkingDir string `json:"workingDir,omitempty"`
	// GracePeriod is how long the program has after SIGTERM, when its
	// attempt's time is up, before SIGKILL. Default 10s.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s or 10m"
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`
}

// EnvVar is one environment variable of a command: a value, or a value read
// at every attempt from a file (a mounted Secret) or from the controller's
// own environment.
//
// +kubebuilder:object:generate=true
// +kubebuilder:validation:XValidation:rule="(has(self.value) && self.value.size() > 0 ? 1 : 0) + (has(self.file) && self.file.size() > 0 ? 1 : 0) + (has(self.env) && self.env.size() > 0 ? 1 : 0) <= 1",message="set at most one of value, file (a mounted Secret's path) and env (a variable of the controller's environment)"
type EnvVar struct {
	// Name is the variable's name.
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	Name string `json:"name"`
	// Value is its value, in clear: no secrets here.
	Value string `json:"value,omitempty"`
	// File is a file whose content (trailing newline trimmed) is the value.
	File string `json:"file,omitempty"`
	// Env is a variable of the controller's environment whose value is the
	// value.
	// +kubebuilder:validation:Pattern=`^([A-Za-z_][A-Za-z0-9_]*)?$`
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
