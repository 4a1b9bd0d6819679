package kubejob_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/kubejob"
	"github.com/leasecron/leasecron/pkg/spec"
)

const (
	jobName    = "nightly"
	probeImage = "registry.invalid/slotprobe:test"
)

// The slot the tests run: 00:30 in Berlin on 2026-03-10 (the slot's date in
// the job's zone is a day after its UTC date).
var (
	slot     = time.Date(2026, 3, 9, 23, 30, 0, 0, time.UTC)
	prevSlot = time.Date(2026, 3, 8, 23, 30, 0, 0, time.UTC)
	slotDate = "2026-03-10"
	slotKey  = jobs.SlotKey(jobName, slot)
)

// template is a Job of one container running the probe with args, once
// (no Pod retries).
func template(args ...string) batchv1.JobTemplateSpec {
	return batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
		BackoffLimit: ptr.To[int32](0),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{{Name: "main", Image: probeImage, Args: args}},
		}},
	}}
}

// newJob returns a job named name at 00:30 in Berlin, of one attempt, with
// t as its template.
func newJob(name string, t batchv1.JobTemplateSpec) *spec.ScheduledJob {
	return &spec.ScheduledJob{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: spec.JobSpec{
			Schedule:      "30 0 * * *",
			TimeZone:      "Europe/Berlin",
			Retries:       &spec.Retries{Limit: ptr.To[int32](1)},
			KubernetesJob: &spec.KubernetesJob{Template: t},
		},
	}
}

// noAPI is a client that fails the test on any API call: Build makes none.
func noAPI(t *testing.T) *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		t.Errorf("unexpected API call: %s %s", a.GetVerb(), a.GetResource())
		return true, nil, errors.New("no API calls here")
	})
	c.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		t.Errorf("unexpected API call: watch %s", a.GetResource())
		return true, nil, errors.New("no API calls here")
	})
	return c
}

// A valid job builds into a jobs.Job, without an API call.
func TestBuildAcceptsAValidJob(t *testing.T) {
	def, err := spec.NewCatalog(kubejob.Kind{Jobs: noAPI(t).BatchV1().Jobs("leasecron"), Namespace: "leasecron"}).Definition(newJob(jobName, template()), spec.Env{})
	if err != nil {
		t.Fatalf("building a valid job: %v", err)
	}
	if _, ok := def.Work.(jobs.Job); !ok {
		t.Fatalf("the kind's work is a %T, not a jobs.Job", def.Work)
	}
}

// Without a client the kind is off: it refuses every kubernetesJob job with
// one line that says how to turn it on, and why it is off.
func TestBuildRefusesWhenOff(t *testing.T) {
	_, err := spec.NewCatalog(kubejob.Kind{}).Definition(newJob(jobName, template()), spec.Env{})
	msg := oneFieldError(t, err, "spec.kubernetesJob", "off").Msg
	for _, want := range []string{"off", "kubernetesJob.enabled: true", "--allow-kubernetes-jobs", "any Pod"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the refusal is more than one line: %q", err)
	}
}

// Every problem with spec.kubernetesJob that the kind can see is an error
// that names the job and the field, and says what is wrong, before any API
// call.
func TestBuildRefusals(t *testing.T) {
	const (
		tf = "spec.kubernetesJob.template"
		pf = tf + ".spec.template.spec"
	)
	env := func(names ...string) []corev1.EnvVar {
		var out []corev1.EnvVar
		for _, n := range names {
			out = append(out, corev1.EnvVar{Name: n, Value: "x"})
		}
		return out
	}
	cases := []struct {
		name  string
		kind  func(k *kubejob.Kind)
		edit  func(sj *spec.ScheduledJob, t *batchv1.JobTemplateSpec)
		field string
		msg   string // a part of the message
	}{
		{name: "kind without a namespace", kind: func(k *kubejob.Kind) { k.Namespace = "" },
			field: "spec.kubernetesJob", msg: "no namespace"},
		{name: "job in another namespace", edit: func(sj *spec.ScheduledJob, _ *batchv1.JobTemplateSpec) { sj.Namespace = "other" },
			field: "metadata.namespace", msg: "creates Jobs in leasecron"},
		{name: "name", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Name = "mine" },
			field: tf + ".metadata.name", msg: "set by the kubernetesJob kind"},
		{name: "generateName", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.GenerateName = "mine-" },
			field: tf + ".metadata.generateName", msg: "set by the kubernetesJob kind"},
		{name: "namespace", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Namespace = "leasecron" },
			field: tf + ".metadata.namespace", msg: "controller's namespace, leasecron"},
		{name: "ownerReferences", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "u"}}
		}, field: tf + ".metadata.ownerReferences", msg: "owned by its ScheduledJob"},
		{name: "label of the kind", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Labels = map[string]string{kubejob.LabelJob: "other", "team": "data"}
		}, field: tf + ".metadata.labels[leasecron.io/job]", msg: "leasecron.io/"},
		{name: "annotation of the kind", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Annotations = map[string]string{kubejob.AnnotationKey: "k"}
		}, field: tf + ".metadata.annotations[leasecron.io/key]", msg: "set by the kubernetesJob kind"},
		{name: "Pod label of the kind", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Spec.Template.Labels = map[string]string{kubejob.LabelSlot: "s"}
		}, field: tf + ".spec.template.metadata.labels[leasecron.io/slot]", msg: "set by the kubernetesJob kind"},
		{name: "selector", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
		}, field: tf + ".spec.selector", msg: "its own selector"},
		{name: "manualSelector", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Spec.ManualSelector = ptr.To(true) },
			field: tf + ".spec.manualSelector", msg: "its own selector"},
		{name: "suspend", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Spec.Suspend = ptr.To(true) },
			field: tf + ".spec.suspend", msg: "never starts"},
		{name: "activeDeadlineSeconds 0", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Spec.ActiveDeadlineSeconds = ptr.To[int64](0)
		},
			field: tf + ".spec.activeDeadlineSeconds", msg: "1 or more"},
		{name: "restartPolicy missing", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Spec.Template.Spec.RestartPolicy = "" },
			field: pf + ".restartPolicy", msg: "Never or OnFailure"},
		{name: "restartPolicy Always", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
		}, field: pf + ".restartPolicy", msg: `"Always"`},
		{name: "no container", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Spec.Template.Spec.Containers = nil },
			field: pf + ".containers", msg: "at least one container"},
		{name: "container without a name", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Spec.Template.Spec.Containers[0].Name = "" },
			field: pf + ".containers[0].name", msg: "missing"},
		{name: "container without an image", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) { t.Spec.Template.Spec.Containers[0].Image = " " },
			field: pf + ".containers[0].image", msg: "missing"},
		{name: "container name twice", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "main", Image: probeImage}}
		}, field: pf + ".containers[0].name", msg: "also the name of " + pf + ".initContainers[0]"},
		{name: "slot context in a container's env", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Spec.Template.Spec.Containers[0].Env = env("DAY", spec.EnvSlotDate)
		}, field: pf + ".containers[0].env[1].name", msg: "LEASECRON_SLOT_DATE is set by the kubernetesJob kind"},
		{name: "slot context in an init container's env", edit: func(_ *spec.ScheduledJob, t *batchv1.JobTemplateSpec) {
			t.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "init", Image: probeImage, Env: env(spec.EnvKey)}}
		}, field: pf + ".initContainers[0].env[0].name", msg: "LEASECRON_KEY is set"},
		{name: "successfulJobsHistoryLimit negative", edit: func(sj *spec.ScheduledJob, _ *batchv1.JobTemplateSpec) {
			sj.Spec.KubernetesJob.SuccessfulJobsHistoryLimit = ptr.To[int32](-1)
		}, field: "spec.kubernetesJob.successfulJobsHistoryLimit", msg: "0 or more"},
		{name: "failedJobsHistoryLimit negative", edit: func(sj *spec.ScheduledJob, _ *batchv1.JobTemplateSpec) {
			sj.Spec.KubernetesJob.FailedJobsHistoryLimit = ptr.To[int32](-2)
		}, field: "spec.kubernetesJob.failedJobsHistoryLimit", msg: "(got -2)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := kubejob.Kind{Jobs: noAPI(t).BatchV1().Jobs("leasecron"), Namespace: "leasecron"}
			if c.kind != nil {
				c.kind(&k)
			}
			sj := newJob(jobName, template())
			if c.edit != nil {
				c.edit(sj, &sj.Spec.KubernetesJob.Template)
			}
			_, err := spec.NewCatalog(k).Definition(sj, spec.Env{})
			oneFieldError(t, err, c.field, c.msg)
		})
	}
}

// A job's Jobs are named <job>-<slot's Unix time>; a long job name is cut
// and a hash of it added, so that every name is a DNS-1123 label of at most
// 63 characters, the same for a slot every time, and distinct per slot and
// per job.
func TestJobName(t *testing.T) {
	if got, want := kubejob.JobName(jobName, slot), "nightly-1773099000"; got != want {
		t.Fatalf("JobName(%q, %s) = %q, want %q", jobName, slot, got, want)
	}
	if got, want := kubejob.JobName(jobName, slot.In(time.FixedZone("UTC+1", 3600))), "nightly-1773099000"; got != want {
		t.Fatalf("JobName of the slot in another zone = %q, want %q", got, want)
	}
	if got, want := kubejob.JobName(strings.Repeat("a", 63), slot), regexp.MustCompile(`^a{43}-[0-9a-f]{8}-1773099000$`); !want.MatchString(got) {
		t.Fatalf("JobName of a 63-character name = %q, want the form %s", got, want)
	}
	// A triggered slot, to the millisecond, is not the schedule's slot of
	// that second.
	triggered := slot.Add(123 * time.Millisecond)
	if got, want := kubejob.JobName(jobName, triggered), "nightly-1773099000-123"; got != want {
		t.Fatalf("JobName of a triggered slot = %q, want %q", got, want)
	}
	for at, want := range map[time.Time]string{slot: "20260309T233000Z", triggered: "20260309T233000.123Z"} {
		if got := kubejob.SlotLabel(at); got != want || len(validation.IsValidLabelValue(got)) > 0 {
			t.Fatalf("SlotLabel(%s) = %q (%v), want %q, a label value", at.Format(time.RFC3339Nano), got, validation.IsValidLabelValue(got), want)
		}
	}
	seen := map[string]string{}
	for n := 1; n <= 63; n++ {
		for _, name := range []string{strings.Repeat("b", n), strings.Repeat("b", n-1) + "c", strings.Repeat("b-", n)[:n-1] + "x"} {
			for _, s := range []time.Time{slot, slot.Add(time.Second), slot.AddDate(0, 0, 1), time.Date(2286, 11, 20, 17, 46, 39, 0, time.UTC),
				slot.Add(time.Millisecond), slot.Add(10 * time.Millisecond), slot.Add(100 * time.Millisecond), slot.Add(999999999)} {
				got := kubejob.JobName(name, s)
				what := fmt.Sprintf("JobName(%q, %s)", name, s.Format(time.RFC3339Nano))
				if msgs := validation.IsDNS1123Label(got); len(msgs) > 0 {
					t.Fatalf("%s = %q: not a DNS-1123 label: %s", what, got, strings.Join(msgs, "; "))
				}
				if again := kubejob.JobName(name, s); again != got {
					t.Fatalf("%s = %q, then %q", what, got, again)
				}
				if other, dup := seen[got]; dup {
					t.Fatalf("%s = %q, as %s", what, got, other)
				}
				seen[got] = what
				if suffix := fmt.Sprintf("-%d", s.Unix()); s.Nanosecond() == 0 && len(name)+len(suffix) <= 63 && got != name+suffix {
					t.Fatalf("%s = %q, want the whole name: %q", what, got, name+suffix)
				}
			}
		}
	}
}

// oneFieldError checks that err, a refused job's, is one FieldError, of the
// test job's field, whose message holds msg, and returns it.
func oneFieldError(t *testing.T, err error, field, msg string) *spec.FieldError {
	t.Helper()
	fes := spec.FieldErrors(err)
	if len(fes) != 1 {
		t.Fatalf("got %d field errors, want 1: %v", len(fes), err)
	}
	if fe := fes[0]; fe.Job != jobName || fe.Field != field || !strings.Contains(fe.Msg, msg) {
		t.Fatalf("error = %q (job %q, field %q), want job %q, field %q, a message with %q", err, fe.Job, fe.Field, jobName, field, msg)
	}
	return fes[0]
}
