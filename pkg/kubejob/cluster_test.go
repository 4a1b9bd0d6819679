//go:build linux

// The tests on a control plane need internal/testenv/kube, which builds on
// Linux only.

package kubejob_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/leasecron/leasecron/internal/testenv/enginetest"
	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/kubejob"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

var (
	scheduledJobs = schema.GroupVersionResource{Group: "leasecron.io", Version: "v1alpha1", Resource: "scheduledjobs"}
	crds          = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// The kind on a real control plane: etcd, kube-apiserver and
// kube-controller-manager (its Job controller makes each Job's Pods, its
// garbage collector deletes what a deleted ScheduledJob owned), with the
// pod runner running the Pods' containers as local processes of the
// probe. The kind's client is a ServiceAccount's with the kind's Rules and
// nothing else. Each subtest has a namespace of its own.
func TestKubernetesJob(t *testing.T) {
	c := startCluster(t, kube.Options{ControllerManager: true}, true)
	for _, s := range []struct {
		name string
		test func(t *testing.T, e *env)
	}{
		{"one-slot-one-job", testOneSlotOneJob},
		{"two-leaders-one-job", testTwoLeaders},
		{"failed-job-is-not-created-again", testFailedJobRetried},
		{"timeout-is-the-jobs-deadline", testTimeout},
		{"cancelled-run-leaves-the-job", testCancelLeavesTheJob},
		{"history-limits", testHistory},
		{"deleted-while-followed", testDeletedWhileFollowed},
		{"template-and-init-containers", testTemplate},
		{"foreign-job-of-that-name", testForeignJob},
		{"without-rbac", testForbidden},
		{"owner-deletion", testGarbageCollection},
	} {
		t.Run(s.name, func(t *testing.T) { s.test(t, c.env(t, s.name)) })
	}
}

// Where the API server enforces owner reference permissions, the kind's
// rules are not enough to set blockOwnerDeletion on a ScheduledJob owner:
// update on scheduledjobs/finalizers is, as the package comment says.
func TestOwnerReferencesPermissionEnforcement(t *testing.T) {
	c := startCluster(t, kube.Options{ExtraAPIServerArgs: []string{"--enable-admission-plugins=OwnerReferencesPermissionEnforcement"}}, false)
	ns := c.cp.Namespace(t, "owners")
	sj := newJob(jobName, template())
	c.apply(t, ns, sj)

	e := &env{cluster: c, ns: ns, log: newLogSink()}
	e.kind = kubejob.Kind{Jobs: restJobs(t, c.cp.ServiceAccountConfig(t, ns, "rules", kubejob.Rules()...), ns), Namespace: ns}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := e.work(t, sj).Run(ctx, slotOf(jobName, 1, 1, slot))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "blockOwnerDeletion") ||
		!strings.Contains(err.Error(), "grant the controller's ServiceAccount update on scheduledjobs/finalizers (leasecron.io)") {
		t.Fatalf("Run with the kind's rules only = %v, want a refusal of blockOwnerDeletion that says what to grant", err)
	}
	t.Logf("with the kind's rules only: %v", err)

	rules := append(kubejob.Rules(), rbacRule("leasecron.io", "scheduledjobs/finalizers", "update"))
	e.kind = kubejob.Kind{Jobs: restJobs(t, c.cp.ServiceAccountConfig(t, ns, "finalizers", rules...), ns), Namespace: ns}
	running := enginetest.RunAsync(ctx, e.work(t, sj), slotOf(jobName, 1, 1, slot))
	job := e.waitJob(t, kubejob.JobName(jobName, slot))
	cancel()
	if err := enginetest.Result(t, running, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want the context's error", err)
	}
	if refs := job.OwnerReferences; len(refs) != 1 || refs[0].UID != sj.UID {
		t.Fatalf("owner references %+v, want the ScheduledJob's", refs)
	}
}

// One slot through the engine makes exactly one Job, named after the slot,
// labelled, annotated and owned by its ScheduledJob; its Pod has the slot
// context; the slot is recorded succeeded once the Job is Complete, and is
// not run again.
func testOneSlotOneJob(t *testing.T, e *env) {
	tmpl := template("--exit=0")
	tmpl.Labels = map[string]string{"team": "data"}
	tmpl.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DAY", Value: "day-$(LEASECRON_SLOT_DATE)"}}
	sj := newJob(jobName, tmpl)
	e.apply(t, e.ns, sj)
	g := e.engine(t, sj)
	if got, err := g.runAt(t, slot); err != nil || got != jobs.Succeeded {
		t.Fatalf("RunSlot = %v, %v; want succeeded (log:\n%s)", got, err, e.log)
	}
	if rs := rows(t, g.db, jobName); len(rs) != 1 || rs[0].Status != jobs.StatusSucceeded || rs[0].Attempts != 1 {
		t.Fatalf("ledger rows = %+v, want one, succeeded after 1 attempt", rs)
	}

	job := e.onlyJob(t, jobName)
	if job.Name != "nightly-1773099000" {
		t.Errorf("the Job is named %q, want nightly-1773099000", job.Name)
	}
	if want := map[string]string{"team": "data", kubejob.LabelJob: jobName, kubejob.LabelSlot: "20260309T233000Z"}; !maps.Equal(job.Labels, want) {
		t.Errorf("the Job's labels are %v, want %v", job.Labels, want)
	}
	for k, v := range map[string]string{kubejob.AnnotationKey: slotKey, kubejob.AnnotationSlot: "2026-03-09T23:30:00Z"} {
		if job.Annotations[k] != v {
			t.Errorf("the Job's annotation %s = %q, want %q", k, job.Annotations[k], v)
		}
	}
	want := metav1.OwnerReference{APIVersion: "leasecron.io/v1alpha1", Kind: "ScheduledJob", Name: jobName, UID: sj.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	if refs := job.OwnerReferences; len(refs) != 1 || !equalOwner(refs[0], want) {
		t.Errorf("the Job's owner references are %+v, want [%+v]", refs, want)
	}
	if d := job.Spec.ActiveDeadlineSeconds; d == nil || *d != 600 {
		t.Errorf("activeDeadlineSeconds = %v, want 600 (spec.timeout's default, 10m)", deref(d))
	}
	if !hasCondition(&job, batchv1.JobComplete) {
		t.Errorf("the Job's conditions are %+v, want Complete", job.Status.Conditions)
	}

	pod := e.onlyPod(t, job.Name)
	if pod.Labels[kubejob.LabelJob] != jobName || pod.Labels[kubejob.LabelSlot] != "20260309T233000Z" {
		t.Errorf("the Pod's labels are %v, want the kind's", pod.Labels)
	}
	env := e.podEnv(t, pod.Name)
	for k, v := range map[string]string{
		spec.EnvSlot: "2026-03-09T23:30:00Z", spec.EnvSlotDate: slotDate, spec.EnvPrevSlot: "2026-03-08T23:30:00Z",
		spec.EnvJob: jobName, spec.EnvKey: slotKey, spec.EnvAttempt: "1", spec.EnvTerm: fmt.Sprint(g.fence.Term),
		"DAY": "day-" + slotDate,
	} {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("the Pod's %s = %q (set: %v), want %q", k, got, ok, v)
		}
	}

	if got, err := g.runAt(t, slot); err != nil || got != jobs.Skipped {
		t.Fatalf("second RunSlot = %v, %v; want skipped", got, err)
	}
	if js := e.jobs(t, jobName); len(js) != 1 || js[0].UID != job.UID {
		t.Fatalf("after the second RunSlot the job has Jobs %v, want only %s", names(js), job.Name)
	}

	// A triggered slot in the same second (to the millisecond) is a slot of
	// its own, with a Job of its own.
	triggered := slot.Add(123 * time.Millisecond)
	if got, err := g.runAt(t, triggered); err != nil || got != jobs.Succeeded {
		t.Fatalf("RunSlot of the triggered slot = %v, %v; want succeeded", got, err)
	}
	js := e.jobs(t, jobName)
	if got, want := names(js), []string{"nightly-1773099000", "nightly-1773099000-123"}; !slices.Equal(got, want) {
		t.Fatalf("the job has Jobs %v, want %v", got, want)
	}
	tj := js[1]
	if tj.Labels[kubejob.LabelSlot] != "20260309T233000.123Z" || tj.Annotations[kubejob.AnnotationKey] != "nightly@2026-03-09T23:30:00.123Z" ||
		tj.Annotations[kubejob.AnnotationSlot] != "2026-03-09T23:30:00.123Z" {
		t.Errorf("the triggered slot's Job has labels %v and annotations %v, want its slot to the millisecond", tj.Labels, tj.Annotations)
	}
	if got := e.podEnv(t, e.onlyPod(t, tj.Name).Name)[spec.EnvSlot]; got != "2026-03-09T23:30:00.123Z" {
		t.Errorf("the triggered slot's Pod has %s=%q, want 2026-03-09T23:30:00.123Z", spec.EnvSlot, got)
	}
}

// Two leaders that run the same slot at once (a frozen one that woke up
// and the next) make one Job: one creates it, the other gets AlreadyExists
// and follows it, and both see it succeed.
func testTwoLeaders(t *testing.T, e *env) {
	gate := filepath.Join(e.dir, "go")
	sj := newJob(jobName, template("--wait-for="+gate))
	e.apply(t, e.ns, sj)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Each leader has a client of its own.
	a := e.work(t, sj)
	e.kind.Jobs = restJobs(t, e.cfg, e.ns)
	b := e.work(t, sj)
	ra := enginetest.RunAsync(ctx, a, slotOf(jobName, 1, 7, slot))
	rb := enginetest.RunAsync(ctx, b, slotOf(jobName, 1, 8, slot))
	eventually(t, "one leader to create the Job and the other to follow it", time.Minute, func() bool {
		return e.log.count("Job created") == 1 && e.log.count("following the slot's Job, created before") == 1
	})
	job := e.onlyJob(t, jobName)
	e.waitPodSays(t, job.Name, "waiting for "+gate)
	touch(t, gate)
	for _, r := range []<-chan error{ra, rb} {
		if err := enginetest.Result(t, r, time.Minute); err != nil {
			t.Fatalf("Run = %v, want nil (log:\n%s)", err, e.log)
		}
	}
	if js := e.jobs(t, jobName); len(js) != 1 || js[0].UID != job.UID || !hasCondition(&js[0], batchv1.JobComplete) {
		t.Fatalf("the job has Jobs %v, want only %s, Complete", names(js), job.Name)
	}
	pod := e.onlyPod(t, job.Name)
	if n := strings.Count(e.runner.Logs(e.ns, pod.Name), "\nexit 0\n"); n != 1 {
		t.Fatalf("the program exited %d times, want once", n)
	}
}

// A Job that fails fails its slot with the Job's reason, recorded in the
// ledger without the template's env values; the engine's retries follow the
// same failed Job instead of making a second one, and so does any later
// attempt of the slot, with the same failure.
func testFailedJobRetried(t *testing.T, e *env) {
	const secret = "do-not-record-7c1f"
	tmpl := template("--exit=3")
	tmpl.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "API_TOKEN", Value: secret}}
	sj := newJob(jobName, tmpl)
	sj.Spec.Retries = &spec.Retries{Limit: ptr.To[int32](3), Backoff: &spec.Backoff{Initial: dur(time.Millisecond), Max: dur(2 * time.Millisecond)}}
	g := e.engine(t, sj)
	if got, err := g.runAt(t, slot); err != nil || got != jobs.Failed {
		t.Fatalf("RunSlot = %v, %v; want failed (log:\n%s)", got, err, e.log)
	}
	name := kubejob.JobName(jobName, slot)
	rs := rows(t, g.db, jobName)
	wantPrefix := fmt.Sprintf("Job %s/%s failed: BackoffLimitExceeded: ", e.ns, name)
	if len(rs) != 1 || rs[0].Status != jobs.StatusFailed || rs[0].Attempts != 3 || !strings.HasPrefix(rs[0].Error, wantPrefix) {
		t.Fatalf("ledger rows = %+v, want one, failed after 3 attempts with %q…", rs, wantPrefix)
	}
	row := rs[0]
	if strings.Contains(row.Error, secret) || strings.Contains(e.log.String(), secret) {
		t.Errorf("the ledger's error or the log shows the template's env value: %q", row.Error)
	}
	if c, o := e.log.count("Job created"), e.log.count("following the slot's Job, created before"); c != 1 || o != 2 {
		t.Errorf("the log has %d \"Job created\" and %d \"following\", want 1 and 2 (attempts 2 and 3)", c, o)
	}
	job := e.onlyJob(t, jobName)
	pod := e.onlyPod(t, job.Name)
	if n := strings.Count(e.runner.Logs(e.ns, pod.Name), "\nexit 3\n"); n != 1 {
		t.Fatalf("the program ran %d times, want once", n)
	}

	// A later attempt of the slot (the next leader, a catch-up, a
	// backfill) reports the same failure, and makes no Job.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.work(t, sj).Run(ctx, slotOf(jobName, 1, 9, slot)); err == nil || err.Error() != row.Error {
		t.Fatalf("a later Run = %v, want the ledger's %q", err, row.Error)
	}
	if js := e.jobs(t, jobName); len(js) != 1 || js[0].UID != job.UID {
		t.Fatalf("the job has Jobs %v, want only %s", names(js), job.Name)
	}
}

// spec.timeout is the Job's activeDeadlineSeconds: an attempt that ends
// first leaves the Job to it, and the slot fails with the Job's
// DeadlineExceeded.
func testTimeout(t *testing.T, e *env) {
	sj := newJob(jobName, template("--wait-for="+filepath.Join(e.dir, "never")))
	sj.Spec.Timeout = dur(4 * time.Second)
	sj.Spec.Retries = &spec.Retries{Limit: ptr.To[int32](5), Backoff: &spec.Backoff{Initial: dur(10 * time.Millisecond), Max: dur(20 * time.Millisecond)}}
	g := e.engine(t, sj)
	if got, err := g.runAt(t, slot); err != nil || got != jobs.Failed {
		t.Fatalf("RunSlot = %v, %v; want failed (log:\n%s)", got, err, e.log)
	}
	job := e.onlyJob(t, jobName)
	if d := job.Spec.ActiveDeadlineSeconds; d == nil || *d != 4 {
		t.Errorf("activeDeadlineSeconds = %v, want 4 (spec.timeout)", deref(d))
	}
	wantPrefix := fmt.Sprintf("Job %s/%s failed: DeadlineExceeded: ", e.ns, job.Name)
	rs := rows(t, g.db, jobName)
	if len(rs) != 1 || rs[0].Status != jobs.StatusFailed || rs[0].Attempts < 2 || !strings.HasPrefix(rs[0].Error, wantPrefix) {
		t.Fatalf("ledger rows = %+v, want one, failed after 2 attempts or more with %q…", rs, wantPrefix)
	}
	if !strings.Contains(e.log.String(), "had not finished when the attempt's time (spec.timeout 4s) was up") {
		t.Errorf("no attempt says it ended before the Job; log:\n%s", e.log)
	}
	if job.Status.Failed != 1 {
		t.Errorf("the Job's status counts %d failed Pods, want the one its deadline ended", job.Status.Failed)
	}
}

// When Run's context ends while the Job runs, Run returns at once and
// leaves the Job running; the next Run follows the same Job to its end.
func testCancelLeavesTheJob(t *testing.T, e *env) {
	gate := filepath.Join(e.dir, "go")
	sj := newJob(jobName, template("--wait-for="+gate))
	w := e.work(t, sj)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := enginetest.RunAsync(ctx, w, slotOf(jobName, 1, 7, slot))
	name := kubejob.JobName(jobName, slot)
	e.waitPodSays(t, name, "waiting for "+gate)
	began := time.Now()
	cancel()
	err := enginetest.Result(t, first, 10*time.Second)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "left running") {
		t.Fatalf("Run = %v, want the context's error, saying the Job is left running", err)
	}
	t.Logf("Run returned %s after its context was cancelled: %v", time.Since(began).Round(time.Microsecond), err)
	job := e.onlyJob(t, jobName)
	if hasCondition(&job, batchv1.JobComplete) || hasCondition(&job, batchv1.JobFailed) || job.DeletionTimestamp != nil {
		t.Fatalf("the Job after the cancelled Run: conditions %+v, deleted %v; want it running", job.Status.Conditions, job.DeletionTimestamp)
	}
	// The program runs on: the pod runner reports it (it may report its
	// start after the program has spoken).
	eventually(t, "the Pod to be Running", time.Minute, func() bool {
		ps := e.pods(t, name)
		return len(ps) == 1 && ps[0].Status.Phase == corev1.PodRunning
	})

	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel2()
	second := enginetest.RunAsync(ctx2, w, slotOf(jobName, 2, 8, slot))
	eventually(t, "the second Run to follow the Job", time.Minute, func() bool {
		return e.log.count("following the slot's Job, created before") == 1
	})
	touch(t, gate)
	if err := enginetest.Result(t, second, time.Minute); err != nil {
		t.Fatalf("the second Run = %v, want nil", err)
	}
	if js := e.jobs(t, jobName); len(js) != 1 || js[0].UID != job.UID || !hasCondition(&js[0], batchv1.JobComplete) {
		t.Fatalf("the job has Jobs %v, want only %s, Complete", names(js), job.Name)
	}
	pod := e.onlyPod(t, name)
	if env := e.podEnv(t, pod.Name); env[spec.EnvAttempt] != "1" || env[spec.EnvTerm] != "7" {
		t.Errorf("the Pod's attempt and term are %q and %q, want those of the Run that created it: 1 and 7", env[spec.EnvAttempt], env[spec.EnvTerm])
	}
}

// A Job deleted while Run follows it fails the attempt, saying so; the
// slot's next attempt creates it again.
func testDeletedWhileFollowed(t *testing.T, e *env) {
	sj := newJob(jobName, template("--wait-for="+filepath.Join(e.dir, "never")))
	w := e.work(t, sj)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	running := enginetest.RunAsync(ctx, w, slotOf(jobName, 1, 1, slot))
	name := kubejob.JobName(jobName, slot)
	e.waitPodSays(t, name, "waiting for "+filepath.Join(e.dir, "never"))
	first := e.onlyJob(t, jobName)
	if err := e.admin.BatchV1().Jobs(e.ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("Job %s/%s was deleted before it finished", e.ns, name)
	if err := enginetest.Result(t, running, 30*time.Second); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Run = %v, want %q…", err, want)
	}
	next := enginetest.RunAsync(ctx, w, slotOf(jobName, 2, 1, slot))
	again := e.waitJob(t, name)
	cancel()
	if err := enginetest.Result(t, next, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("the next Run = %v, want the context's error", err)
	}
	if again.UID == first.UID {
		t.Fatalf("the next attempt found the deleted Job %s", first.UID)
	}
}

// After each slot, the job's finished Jobs beyond the history limits are
// deleted, oldest first; the Job of the slot that just finished counts but
// stays.
func testHistory(t *testing.T, e *env) {
	code := filepath.Join(e.dir, "code")
	sj := newJob(jobName, template("--exit-file="+code))
	sj.Spec.KubernetesJob.SuccessfulJobsHistoryLimit = ptr.To[int32](2)
	sj.Spec.KubernetesJob.FailedJobsHistoryLimit = ptr.To[int32](1)
	g := e.engine(t, sj)
	day := func(i int) time.Time { return slot.AddDate(0, 0, i) }
	for i, s := range []struct {
		exit int
		kept []int // the days whose Jobs remain
	}{
		{0, []int{0}},
		{3, []int{0, 1}},
		{0, []int{0, 1, 2}},
		{3, []int{0, 2, 3}}, // failed: 1 and 3, of which 1 is kept
		{0, []int{2, 3, 4}}, // succeeded: 0, 2 and 4, of which 2 are kept
		{0, []int{3, 4, 5}},
	} {
		if err := os.WriteFile(code, []byte(fmt.Sprint(s.exit)), 0o644); err != nil {
			t.Fatal(err)
		}
		want := jobs.Succeeded
		if s.exit != 0 {
			want = jobs.Failed
		}
		if got, err := g.runAt(t, day(i)); err != nil || got != want {
			t.Fatalf("day %d: RunSlot = %v, %v; want %v (log:\n%s)", i, got, err, want, e.log)
		}
		var wantNames []string
		for _, d := range s.kept {
			wantNames = append(wantNames, kubejob.JobName(jobName, day(d)))
		}
		if got := names(e.jobs(t, jobName)); !slices.Equal(got, wantNames) {
			t.Fatalf("after day %d the job has Jobs %v, want %v", i, got, wantNames)
		}
	}
}

// The template's labels, annotations and init containers are kept, the
// slot context comes first in every container's env, a smaller
// activeDeadlineSeconds of the template is kept, and a job of a jobs file
// (no UID) has no owner. A job's name of 63 characters still makes a Job
// name the API server takes.
func testTemplate(t *testing.T, e *env) {
	long := strings.Repeat("long-job-name-", 5)[:63]
	tmpl := template("--exit=0")
	tmpl.Labels = map[string]string{"team": "data"}
	tmpl.Annotations = map[string]string{"note": "kept"}
	tmpl.Spec.ActiveDeadlineSeconds = ptr.To[int64](60)
	ps := &tmpl.Spec.Template.Spec
	ps.InitContainers = []corev1.Container{{Name: "init", Image: probeImage, Env: []corev1.EnvVar{{Name: "INIT", Value: "1"}}}}
	ps.Containers[0].Env = []corev1.EnvVar{{Name: "DAY", Value: "day-$(LEASECRON_SLOT_DATE)"}}
	sj := newJob(long, tmpl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	running := enginetest.RunAsync(ctx, e.work(t, sj), slotOf(long, 2, 5, slot))
	name := kubejob.JobName(long, slot)
	job := e.waitJob(t, name)
	cancel()
	if err := enginetest.Result(t, running, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want the context's error", err)
	}
	if len(name) > 63 {
		t.Errorf("the Job's name %q has %d characters", name, len(name))
	}
	if want := map[string]string{"team": "data", kubejob.LabelJob: long, kubejob.LabelSlot: "20260309T233000Z"}; !maps.Equal(job.Labels, want) {
		t.Errorf("the Job's labels are %v, want %v", job.Labels, want)
	}
	if want := map[string]string{"note": "kept", kubejob.AnnotationKey: jobs.SlotKey(long, slot), kubejob.AnnotationSlot: "2026-03-09T23:30:00Z"}; !maps.Equal(job.Annotations, want) {
		t.Errorf("the Job's annotations are %v, want %v", job.Annotations, want)
	}
	if len(job.OwnerReferences) != 0 {
		t.Errorf("the Job of a jobs file's job has owners %+v, want none", job.OwnerReferences)
	}
	if d := job.Spec.ActiveDeadlineSeconds; d == nil || *d != 60 {
		t.Errorf("activeDeadlineSeconds = %v, want the template's 60", deref(d))
	}
	if l := job.Spec.Template.Labels; l[kubejob.LabelJob] != long || l[kubejob.LabelSlot] != "20260309T233000Z" {
		t.Errorf("the Pod template's labels are %v, want the kind's", l)
	}
	slotVars := []string{
		"LEASECRON_SLOT=2026-03-09T23:30:00Z", "LEASECRON_SLOT_DATE=" + slotDate, "LEASECRON_PREV_SLOT=2026-03-08T23:30:00Z",
		"LEASECRON_JOB=" + long, "LEASECRON_KEY=" + jobs.SlotKey(long, slot), "LEASECRON_ATTEMPT=2", "LEASECRON_TERM=5",
	}
	got := job.Spec.Template.Spec
	for _, c := range []struct {
		what string
		env  []corev1.EnvVar
		want []string
	}{
		{"init container", got.InitContainers[0].Env, append(slices.Clone(slotVars), "INIT=1")},
		{"container", got.Containers[0].Env, append(slices.Clone(slotVars), "DAY=day-$(LEASECRON_SLOT_DATE)")},
	} {
		var have []string
		for _, v := range c.env {
			have = append(have, v.Name+"="+v.Value)
		}
		if !slices.Equal(have, c.want) {
			t.Errorf("the %s's env is\n%q\nwant\n%q", c.what, have, c.want)
		}
	}
}

// A Job of the slot's name that is not the job's Job of that slot fails
// the attempt, saying so, and no other Job is made.
func testForeignJob(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := kubejob.JobName(jobName, slot)
	foreign := template()
	if _, err := e.admin.BatchV1().Jobs(e.ns).Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "other"}},
		Spec:       foreign.Spec,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := e.work(t, newJob(jobName, template())).Run(ctx, slotOf(jobName, 1, 1, slot))
	want := fmt.Sprintf("a Job named %s already exists in namespace %s, and it is not job %s's Job of slot 2026-03-09T23:30:00Z", name, e.ns, jobName)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Run = %v, want %q…", err, want)
	}
	list, lerr := e.admin.BatchV1().Jobs(e.ns).List(ctx, metav1.ListOptions{})
	if lerr != nil || len(list.Items) != 1 {
		t.Fatalf("the namespace has %d Jobs (%v), want the foreign one only", len(list.Items), lerr)
	}
}

// Without the kind's rules, Run fails and says what to grant.
func testForbidden(t *testing.T, e *env) {
	cfg := e.cp.ServiceAccountConfig(t, e.ns, "nobody")
	e.kind = kubejob.Kind{Jobs: restJobs(t, cfg, e.ns), Namespace: e.ns}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := e.work(t, newJob(jobName, template())).Run(ctx, slotOf(jobName, 1, 1, slot))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "grant the controller's ServiceAccount create, get, list, watch and delete on jobs (batch)") {
		t.Fatalf("Run = %v, want Forbidden, saying what to grant", err)
	}
}

// A ScheduledJob's Jobs go with it: the owner reference is the object's.
// (Last: the garbage collector learns of the CRD at its periodic resync.)
func testGarbageCollection(t *testing.T, e *env) {
	sj := newJob(jobName, template("--exit=0"))
	e.apply(t, e.ns, sj)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.work(t, sj).Run(ctx, slotOf(jobName, 1, 1, slot)); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	job := e.onlyJob(t, jobName)
	if err := e.dyn.Resource(scheduledJobs).Namespace(e.ns).Delete(ctx, jobName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	eventually(t, "the garbage collector to delete the ScheduledJob's Job", 90*time.Second, func() bool {
		_, err := e.admin.BatchV1().Jobs(e.ns).Get(ctx, job.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("the Job was deleted %s after its ScheduledJob", time.Since(began).Round(time.Millisecond))
}

// ---- the cluster ----

// cluster is a control plane, its clients and, for Pods, the pod runner.
type cluster struct {
	cp     *kube.ControlPlane
	runner *kube.PodRunner
	admin  kubernetes.Interface
	dyn    dynamic.Interface
}

func startCluster(t *testing.T, opts kube.Options, pods bool) *cluster {
	t.Helper()
	c := &cluster{cp: kube.Start(t, opts)}
	c.admin = kubernetes.NewForConfigOrDie(c.cp.AdminConfig())
	c.dyn = dynamic.NewForConfigOrDie(c.cp.AdminConfig())
	if pods {
		c.runner = c.cp.StartPodRunner(t, kube.PodRunnerOptions{Images: func(ref string) (kube.Image, bool) {
			return kube.Image{Entrypoint: []string{probe}}, ref == probeImage
		}})
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("pod logs (tails):\n%s", c.runner.LogTails(30))
			}
		})
	}
	c.installCRD(t)
	return c
}

// installCRD installs the chart's ScheduledJob CRD (charts/leasecron/crds)
// and waits until ScheduledJobs are served.
func (c *cluster) installCRD(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	files, err := filepath.Glob(filepath.Join("..", "..", "charts", "leasecron", "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, yamlDocs(t, b)...)
	}
	installed := 0
	for _, d := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal(d, &obj); err != nil {
			t.Fatal(err)
		}
		if obj["kind"] != "CustomResourceDefinition" {
			continue
		}
		if _, err := c.dyn.Resource(crds).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("install the ScheduledJob CRD: %v", err)
		}
		installed++
	}
	if installed == 0 {
		t.Fatalf("no CustomResourceDefinition in charts/leasecron/crds (files %v): run make generate", files)
	}
	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := c.dyn.Resource(scheduledJobs).Namespace("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("ScheduledJobs are not served a minute after the CRD was created: %v", err)
	}
}

func yamlDocs(t *testing.T, b []byte) [][]byte {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
}

// apply creates sj as a ScheduledJob object in ns and sets its namespace
// and UID, as the cluster's source of jobs would.
func (c *cluster) apply(t *testing.T, ns string, sj *spec.ScheduledJob) {
	t.Helper()
	b, err := json.Marshal(sj)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	obj["apiVersion"], obj["kind"] = spec.APIVersion, spec.KindName
	delete(obj, "status")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := c.dyn.Resource(scheduledJobs).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ScheduledJob %s: %v", sj.Name, err)
	}
	sj.Namespace, sj.UID = ns, u.GetUID()
}

// env is one subtest's namespace, the kind as the controller's
// ServiceAccount there, and the log the kind and the engine write.
type env struct {
	*cluster
	ns   string
	cfg  *rest.Config // the controller's ServiceAccount
	kind kubejob.Kind
	dir  string // for files the probe reads
	log  *logSink
}

func (c *cluster) env(t *testing.T, name string) *env {
	t.Helper()
	e := &env{cluster: c, ns: c.cp.Namespace(t, name), dir: t.TempDir(), log: newLogSink()}
	e.cfg = c.cp.ServiceAccountConfig(t, e.ns, "leasecron", kubejob.Rules()...)
	e.kind = kubejob.Kind{Jobs: restJobs(t, e.cfg, e.ns), Namespace: e.ns}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of the kind and the engine:\n%s", e.log)
		}
	})
	return e
}

func (e *env) definition(t *testing.T, sj *spec.ScheduledJob) jobs.Definition {
	t.Helper()
	def, err := spec.NewCatalog(e.kind).Definition(sj, spec.Env{Log: e.log.logger()})
	if err != nil {
		t.Fatalf("building the job: %v", err)
	}
	return def
}

// work returns a valid job's work, to run without the engine.
func (e *env) work(t *testing.T, sj *spec.ScheduledJob) jobs.Job {
	t.Helper()
	w, ok := e.definition(t, sj).Work.(jobs.Job)
	if !ok {
		t.Fatal("the kind's work is not a jobs.Job")
	}
	return w
}

// engine is a scheduler of one job on a fresh SQLite ledger, leading.
type engine struct {
	job   string
	db    *gorm.DB
	sched *jobs.Scheduler
	fence jobs.Fence
}

func (e *env) engine(t *testing.T, sj *spec.ScheduledJob) *engine {
	t.Helper()
	g := &engine{job: sj.Name, db: enginetest.OpenDB(t, "sqlite")}
	g.sched = enginetest.Scheduler(t, g.db, "holder", e.definition(t, sj), e.log.logger())
	f, err := g.sched.Ledger().BeginTerm(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	g.fence = f
	return g
}

func (g *engine) runAt(t *testing.T, at time.Time) (jobs.Outcome, error) {
	return enginetest.RunAt(t, g.sched, g.fence, g.job, at)
}

func rows(t *testing.T, db *gorm.DB, job string) []jobs.JobRun { return enginetest.Rows(t, db, job) }

// slotOf is the context the engine gives the job's work for at.
func slotOf(job string, attempt int, term int64, at time.Time) jobs.Slot {
	loc, _ := time.LoadLocation("Europe/Berlin")
	return jobs.Slot{Job: job, Time: at, Prev: at.AddDate(0, 0, -1), Date: model.DateOf(at.In(loc)), Location: loc,
		Key: jobs.SlotKey(job, at), Attempt: attempt, Term: term}
}

// jobs returns the job's Jobs, by name.
func (e *env) jobs(t *testing.T, job string) []batchv1.Job {
	t.Helper()
	list, err := e.admin.BatchV1().Jobs(e.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{kubejob.LabelJob: job}).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(list.Items, func(a, b batchv1.Job) int { return strings.Compare(a.Name, b.Name) })
	return list.Items
}

func (e *env) onlyJob(t *testing.T, job string) batchv1.Job {
	t.Helper()
	js := e.jobs(t, job)
	if len(js) != 1 {
		t.Fatalf("job %s has Jobs %v, want exactly one", job, names(js))
	}
	return js[0]
}

// waitJob waits until the Job name exists, and returns it.
func (e *env) waitJob(t *testing.T, name string) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	eventually(t, "Job "+name+" to be created", time.Minute, func() bool {
		var err error
		job, err = e.admin.BatchV1().Jobs(e.ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil
	})
	return job
}

// pods returns the Pods of the Job name.
func (e *env) pods(t *testing.T, name string) []corev1.Pod {
	t.Helper()
	list, err := e.admin.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{batchv1.JobNameLabel: name}).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (e *env) onlyPod(t *testing.T, name string) corev1.Pod {
	t.Helper()
	ps := e.pods(t, name)
	if len(ps) != 1 {
		t.Fatalf("Job %s has %d Pods, want exactly one", name, len(ps))
	}
	return ps[0]
}

// waitPodSays waits until the Job name's Pod has written the line.
func (e *env) waitPodSays(t *testing.T, name, line string) {
	t.Helper()
	eventually(t, fmt.Sprintf("the Pod of Job %s to say %q", name, line), time.Minute, func() bool {
		for _, p := range e.pods(t, name) {
			if strings.Contains(e.runner.Logs(e.ns, p.Name), "\n"+line+"\n") {
				return true
			}
		}
		return false
	})
}

// podEnv is the environment the probe in the Pod printed.
func (e *env) podEnv(t *testing.T, pod string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for line := range strings.Lines(e.runner.Logs(e.ns, pod)) {
		if kv, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "env "); ok {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = v
		}
	}
	if len(out) == 0 {
		t.Fatalf("the probe in Pod %s printed no environment", pod)
	}
	return out
}

func names(js []batchv1.Job) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.Name)
	}
	return out
}

func hasCondition(j *batchv1.Job, typ batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == typ && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func equalOwner(a, b metav1.OwnerReference) bool {
	return a.APIVersion == b.APIVersion && a.Kind == b.Kind && a.Name == b.Name && a.UID == b.UID &&
		deref(a.Controller) == deref(b.Controller) && deref(a.BlockOwnerDeletion) == deref(b.BlockOwnerDeletion)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventually polls ok until it holds, failing the test after within.
func eventually(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, within, true, func(context.Context) (bool, error) {
		return ok(), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: not within %s", what, within)
	}
}

func rbacRule(group, resource string, verbs ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, Verbs: verbs}
}

// logSink is where the kind and the engine log, as JSON: one record a
// line.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newLogSink() *logSink { return &logSink{} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// count is how many records have the message msg.
func (s *logSink) count(msg string) int {
	n := 0
	for line := range strings.Lines(s.String()) {
		var r struct{ Msg string }
		if json.Unmarshal([]byte(line), &r) == nil && r.Msg == msg {
			n++
		}
	}
	return n
}

// restJobs is the kind's own REST client (NewJobs), as the controller
// builds it, so that the tests drive the client it ships.
func restJobs(t *testing.T, cfg *rest.Config, namespace string) kubejob.Jobs {
	t.Helper()
	j, err := kubejob.NewJobs(cfg, namespace)
	if err != nil {
		t.Fatal(err)
	}
	return j
}
