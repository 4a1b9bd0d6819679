// Package kubejob is the kubernetesJob job kind: for each slot it creates
// one batch/v1 Job, from the job's template, in the controller's namespace,
// and follows it until it has finished.
//
// # Promise
//
// Exactly one Job object per slot. The Job's name is derived from the job's
// name and the slot (see JobName), so a second create of the same slot —
// by a leader that froze past its lease and woke up, a catch-up, a
// backfill, a retry, another replica — is refused by the API server with
// AlreadyExists. The kind then reads that Job, checks by its labels that it
// is this job's Job of this slot (else the attempt fails and says so), and
// follows it like the Job it created. The slot succeeds when the Job has
// the condition Complete=True, and fails when it has Failed=True, with that
// condition's reason and message (DeadlineExceeded, BackoffLimitExceeded,
// ...), which the engine records in the ledger.
//
// Retries of a slot's work are the Job's: its backoffLimit (the Job
// controller's default is 6) and podFailurePolicy decide how often its Pods
// run again. A Job that failed is never created again for its slot: a retry
// of the slot (the engine's retries, the next leader, a catch-up, a
// backfill) finds it, gets AlreadyExists, and reports the same failure, so
// the engine's retries cannot make a second Job. They still matter when an
// attempt ends before the Job finished (the attempt's time is up, the
// leadership is lost): the next attempt follows the same Job.
//
// What breaks the promise:
//
//   - A Job that is deleted (by hand, by its template's
//     ttlSecondsAfterFinished, by the garbage collector with its
//     ScheduledJob) before its slot is recorded succeeded is created again
//     by the slot's next attempt. So is one whose create was refused for
//     another reason (a quota, an admission webhook): no Job exists, and the
//     next attempt tries again. The history limits below never delete the
//     Job of the slot that just finished.
//   - One Job can run its program more than once: its Pods are retried per
//     backoffLimit, a Pod on a node that fails is replaced, and with the
//     default podReplacementPolicy a replacement may start while the old
//     Pod is still terminating (set podReplacementPolicy: Failed to wait).
//     Every Pod of the slot has the same LEASECRON_KEY: a program that keys
//     its effect on it sees each slot once.
//
// # The Job
//
// Each slot's Job is the template with:
//
//	metadata.name       JobName(job, slot): "<job>-<slot's Unix time>" (and a triggered
//	                    slot's milliseconds: "<job>-<Unix time>-<fraction>")
//	metadata.namespace  the controller's (Kind.Namespace)
//	labels              leasecron.io/job: <job>, leasecron.io/slot: <slot, such as 20260309T233000Z>
//	                    (on the Job and on its Pods)
//	annotations         leasecron.io/key: <job>@<slot RFC 3339 UTC>, leasecron.io/slot: <slot RFC 3339 UTC>
//	ownerReferences     the ScheduledJob (controller, blockOwnerDeletion), when the job is a
//	                    ScheduledJob object of the cluster; none for a job of a jobs file
//	activeDeadlineSeconds  spec.timeout in whole seconds (rounded up), or the template's, if smaller
//
// and the slot context first in the env of every container and init
// container, so that the template's env values, command and args can refer
// to it as $(LEASECRON_SLOT):
//
//	LEASECRON_SLOT       the slot's time, RFC 3339 UTC, such as 2026-03-10T04:00:00Z
//	LEASECRON_SLOT_DATE  its calendar date in the job's zone, YYYY-MM-DD
//	LEASECRON_PREV_SLOT  the schedule's slot before it, RFC 3339 UTC ("" if none)
//	LEASECRON_JOB        the job's name
//	LEASECRON_KEY        the slot's key, the same on every attempt
//	LEASECRON_ATTEMPT    the attempt that created the Job, from 1
//	LEASECRON_TERM       the leadership term of that attempt (the fence); 0 for a manual run
//
// The template may not set what the kind sets: metadata.name, generateName,
// namespace and ownerReferences, labels and annotations under
// leasecron.io/, the slot context's variables, a selector (each Job gets its
// own from the Job controller) or suspend. Its Pods' restartPolicy must be
// Never or OnFailure, as for any Job. The rest is checked by the API server
// when the Job is created; a Job it refuses fails the attempt with its
// answer.
//
// # How an attempt ends
//
// Run creates (or finds) the Job and follows it with a watch on that one
// Job. It returns nil when the Job is Complete, and the Job's failure when
// it is Failed. When its context ends — the attempt's time (spec.timeout) is
// up, the leadership is lost, the controller shuts down — Run returns the
// context's error at once and leaves the Job running: the Job's own
// activeDeadlineSeconds ends it, and the next attempt, on this leader or
// the next, follows it. A Job deleted while it is followed fails the
// attempt. The failure's text names the Job and its condition; it never
// holds the template's env values.
//
// # History
//
// After a slot's Job has finished, the kind deletes this job's finished
// Jobs (found by the label leasecron.io/job) beyond
// spec.kubernetesJob.successfulJobsHistoryLimit (default 3) Complete and
// failedJobsHistoryLimit (default 1) Failed ones, oldest slot first, with
// propagation Background (the garbage collector then deletes their Pods).
// The Job of the slot that just finished counts against its limit but is
// not deleted: with a limit of 0 it goes when the next slot's Job finishes,
// so a retry of its slot still finds it. A Job that could not be deleted is
// logged, and the slot's outcome stays the Job's.
//
// # Privilege and RBAC
//
// The kind is off unless the controller turns it on (Kind.Jobs; the
// chart's kubernetesJob.enabled: true, the flag --allow-kubernetes-jobs):
// without it, a kubernetesJob job is refused when the jobs are loaded.
// Creating a Job means running any Pod in the namespace: whoever can define
// a job can then run any image there, as any of the namespace's
// ServiceAccounts, mounting any of its Secrets (the Job controller creates
// the Pods, so RBAC on pods does not apply; Pod Security admission does).
//
// The controller's ServiceAccount needs, in its namespace (see Rules):
//
//	rules:
//	- apiGroups: ["batch"]
//	  resources: ["jobs"]
//	  verbs: ["create", "get", "list", "watch", "delete"]
//
// and nothing on pods or secrets. Where the API server enables the
// OwnerReferencesPermissionEnforcement admission plugin (upstream
// Kubernetes does not by default; OpenShift does), setting
// blockOwnerDeletion on the owner reference to a ScheduledJob also needs
// update on scheduledjobs/finalizers in the leasecron.io group.
package kubejob

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/leasecron/leasecron/pkg/spec"
)

// KindName is the kind's name: its field in a job spec.
const KindName = "kubernetesJob"

// The labels and annotations the kind puts on each slot's Job (the labels
// also on its Pods). A template may not set any key under leasecron.io/.
const (
	// LabelJob is the job's name.
	LabelJob = "leasecron.io/job"
	// LabelSlot is the slot's time in UTC, such as 20260309T233000Z
	// (SlotLabel).
	LabelSlot = "leasecron.io/slot"
	// AnnotationKey is the slot's key, <job>@<slot RFC 3339 UTC>.
	AnnotationKey = "leasecron.io/key"
	// AnnotationSlot is the slot's time, RFC 3339 UTC (with the fraction
	// of a slot that is not a whole second).
	AnnotationSlot = "leasecron.io/slot"

	reservedPrefix = "leasecron.io/"
)

// The history limits of a spec that sets none.
const (
	DefaultSuccessfulJobsHistoryLimit = 3
	DefaultFailedJobsHistoryLimit     = 1
)

// maxName is the longest Job name: the Job controller puts it in a label
// of the Job's Pods, and label values have at most 63 characters.
const maxName = 63

// slotLabelLayout formats a slot's time as a label value.
const slotLabelLayout = "20060102T150405.999999999Z"

// offMessage is what a controller that does not allow kubernetesJob jobs
// says.
const offMessage = "kubernetesJob jobs are off in this controller: turn them on with the chart value kubernetesJob.enabled: true, or start the controller with --allow-kubernetes-jobs (whoever can define a job can then run any Pod in the controller's namespace)"

// Rules are the RBAC rules the kind needs in the controller's namespace.
func Rules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{
		APIGroups: []string{"batch"},
		Resources: []string{"jobs"},
		Verbs:     []string{"create", "get", "list", "watch", "delete"},
	}}
}

// Kind is the kubernetesJob kind. It implements spec.Kind. The zero value
// refuses every kubernetesJob job: a controller turns the kind on by giving
// it a client.
type Kind struct {
	// Jobs creates, follows and deletes the Jobs, in Namespace (NewJobs, or
	// a clientset's BatchV1().Jobs(Namespace)). Nil turns the kind off.
	Jobs Jobs
	// Namespace is where the Jobs are created: the controller's namespace,
	// where its ScheduledJobs are.
	Namespace string
}

// Name implements spec.Kind.
func (Kind) Name() string { return KindName }

// Build implements spec.Kind: it checks spec.kubernetesJob and returns a
// *Job. Without a client, it refuses the job. It makes no API call.
func (k Kind) Build(j spec.Job) (any, error) {
	if k.Jobs == nil {
		return nil, j.Errorf("spec.kubernetesJob", "%s", offMessage)
	}
	w, err := build(k, j)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Job is the kubernetesJob work: one batch/v1 Job per slot, which every
// attempt of the slot follows. It implements jobs.Job.
type Job struct {
	job       string
	namespace string
	template  *batchv1.JobTemplateSpec
	owner     *metav1.OwnerReference // nil for a job of a jobs file
	deadline  int64                  // activeDeadlineSeconds from spec.timeout
	timeout   time.Duration          // spec.timeout, for messages
	keepOK    int
	keepFail  int
	api       Jobs // in namespace
	log       *slog.Logger
}

// JobName is the name of the Job of job's slot: "<job>-<slot's Unix
// time>", such as nightly-rollup-1773099000, and for a slot that is not a
// whole second (a triggered one, to the millisecond) the fraction's digits
// after another dash, such as nightly-rollup-1773099000-123. When that
// would be longer than 63 characters (a job's name of more than 52, or of
// more than 48 with a millisecond fraction), the job's name is cut to fit
// and 8 hex digits of the SHA-256 of the whole job name follow the cut:
// "<first 43 characters>-<hash>-<Unix time>" for a whole second. The name
// is the same on every attempt, leader, catch-up and backfill of the slot,
// and distinct per slot and per job.
func JobName(job string, slot time.Time) string {
	suffix := "-" + strconv.FormatInt(slot.Unix(), 10)
	if ns := slot.Nanosecond(); ns != 0 {
		suffix += "-" + strings.TrimRight(fmt.Sprintf("%09d", ns), "0")
	}
	if len(job)+len(suffix) <= maxName {
		return job + suffix
	}
	sum := sha256.Sum256([]byte(job))
	hash := hex.EncodeToString(sum[:4])
	keep := max(maxName-len(suffix)-1-len(hash), 0)
	prefix := strings.TrimRight(job[:min(keep, len(job))], "-.")
	return prefix + "-" + hash + suffix
}

// SlotLabel is the value of the leasecron.io/slot label of slot's Job: its
// time in UTC, such as 20260309T233000Z, with the fraction of a slot that
// is not a whole second (20260309T233000.123Z).
func SlotLabel(slot time.Time) string { return slot.UTC().Format(slotLabelLayout) }

func build(k Kind, j spec.Job) (*Job, error) {
	const field = "spec.kubernetesJob"
	kj := j.Spec.KubernetesJob
	if kj == nil {
		return nil, j.Errorf(field, "missing: a kubernetesJob job needs a template, a batch/v1 JobTemplateSpec")
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, j.Errorf(field, format, args...))
	}
	if k.Namespace == "" {
		bad(field, "this controller knows no namespace to create Jobs in: give the kind the controller's namespace")
	} else if ns := j.Namespace; ns != "" && ns != k.Namespace {
		bad("metadata.namespace", "the job is in namespace %s, but this controller creates Jobs in %s: define it in %s", ns, k.Namespace, k.Namespace)
	}

	t := &kj.Template
	tf := field + ".template"
	set := func(f, what string) {
		bad(tf+".metadata."+f, "set by the kubernetesJob kind (%s): remove it", what)
	}
	if t.Name != "" {
		set("name", "each slot's Job is named <job>-<slot's Unix time>")
	}
	if t.GenerateName != "" {
		set("generateName", "each slot's Job is named <job>-<slot's Unix time>")
	}
	if t.Namespace != "" {
		set("namespace", "the Jobs are created in the controller's namespace, "+k.Namespace)
	}
	if len(t.OwnerReferences) > 0 {
		set("ownerReferences", "a Job is owned by its ScheduledJob")
	}
	reserved(tf+".metadata.labels", t.Labels, bad)
	reserved(tf+".metadata.annotations", t.Annotations, bad)

	js := &t.Spec
	sf := tf + ".spec"
	if js.Selector != nil {
		bad(sf+".selector", "each slot's Job gets its own selector from the Job controller: remove it")
	}
	if ptr.Deref(js.ManualSelector, false) {
		bad(sf+".manualSelector", "each slot's Job gets its own selector from the Job controller: remove it")
	}
	if ptr.Deref(js.Suspend, false) {
		bad(sf+".suspend", "a suspended Job never starts, and its slot would wait for it: remove it (spec.suspend stops a job's new slots)")
	}
	if d := js.ActiveDeadlineSeconds; d != nil && *d <= 0 {
		bad(sf+".activeDeadlineSeconds", "must be 1 or more (got %d); spec.timeout sets it too", *d)
	}

	pf := sf + ".template"
	reserved(pf+".metadata.labels", js.Template.Labels, bad)
	ps := &js.Template.Spec
	pf += ".spec"
	switch ps.RestartPolicy {
	case corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure:
	case "":
		bad(pf+".restartPolicy", "missing: set Never or OnFailure, as every Job's Pods need")
	default:
		bad(pf+".restartPolicy", "%q: a Job's Pods need Never or OnFailure", ps.RestartPolicy)
	}
	if len(ps.Containers) == 0 {
		bad(pf+".containers", "missing: give at least one container, such as {name: main, image: registry.example.com/rollup:1.2, args: [\"--date=$(LEASECRON_SLOT_DATE)\"]}")
	}
	names := map[string]string{} // container name -> field
	containers(pf+".initContainers", ps.InitContainers, names, bad)
	containers(pf+".containers", ps.Containers, names, bad)

	keepOK, keepFail := DefaultSuccessfulJobsHistoryLimit, DefaultFailedJobsHistoryLimit
	limit := func(f string, n *int32, into *int) {
		if n == nil {
			return
		}
		if *n < 0 {
			bad(field+"."+f, "must be 0 or more (got %d)", *n)
			return
		}
		*into = int(*n)
	}
	limit("successfulJobsHistoryLimit", kj.SuccessfulJobsHistoryLimit, &keepOK)
	limit("failedJobsHistoryLimit", kj.FailedJobsHistoryLimit, &keepFail)

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	w := &Job{
		job: j.Name, namespace: k.Namespace, template: t.DeepCopy(),
		deadline: max(int64(math.Ceil(j.Policy.Timeout.Seconds())), 1), timeout: j.Policy.Timeout,
		keepOK: keepOK, keepFail: keepFail, api: k.Jobs, log: j.Env.Log,
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	if uid := j.UID; uid != "" {
		w.owner = &metav1.OwnerReference{
			APIVersion: spec.APIVersion, Kind: spec.KindName, Name: j.Name, UID: uid,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}
	}
	return w, nil
}

// reserved refuses the keys of m (labels or annotations at field) that are
// the kind's.
func reserved(field string, m map[string]string, bad func(field, format string, args ...any)) {
	for k := range m {
		if strings.HasPrefix(k, reservedPrefix) {
			bad(fmt.Sprintf("%s[%s]", field, k), "keys under %s are set by the kubernetesJob kind: remove it, or use another prefix", reservedPrefix)
		}
	}
}

// containers checks the containers at field: a name, once in the Pod, an
// image, and none of the slot context's variables in env.
func containers(field string, cs []corev1.Container, names map[string]string, bad func(field, format string, args ...any)) {
	for i := range cs {
		c := &cs[i]
		cf := fmt.Sprintf("%s[%d]", field, i)
		switch other, dup := names[c.Name]; {
		case c.Name == "":
			bad(cf+".name", "missing: give the container a name, such as main")
		case dup:
			bad(cf+".name", "%q is also the name of %s: give each container its own", c.Name, other)
		default:
			names[c.Name] = cf
		}
		if strings.TrimSpace(c.Image) == "" {
			bad(cf+".image", "missing: give the container's image, such as registry.example.com/rollup:1.2")
		}
		for k, e := range c.Env {
			if spec.IsSlotEnvName(e.Name) {
				bad(fmt.Sprintf("%s.env[%d].name", cf, k), "%s is set by the kubernetesJob kind to the slot context: remove it, or use another name", e.Name)
			}
		}
	}
}
