package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	clustersource "github.com/leasecron/leasecron/internal/cluster"
	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/kubejob"
	"github.com/leasecron/leasecron/pkg/spec"
)

// The kinds scenario's ScheduledJobs: one of each kind, all per second.
const (
	kindsSQL     = "sql-counter"
	kindsHTTP    = "http-hook"
	kindsCommand = "command-key"
	kindsKube    = "kube-job"
)

const (
	// freeze is how long the leader is stopped (SIGSTOP): longer than
	// the lease, so a follower takes over while it sleeps.
	freeze = leaseDuration + 2*time.Second
	// applySlack is how long after `kubectl patch` returned a slot may
	// still be run under the old spec: the change reaches the leader
	// within a second (README: Jobs on Kubernetes), and a slot due just
	// before the change arrived may be dropped by a loop that woke late.
	applySlack = time.Second
)

// kindsRun is the timeline the kinds scenario records as it goes, and what
// its checks allow because of it.
type kindsRun struct {
	r *release
	// outages: from a leader's SIGKILL or SIGSTOP to the next "leading".
	outages []interval
	// suspendSent is when the sql job's suspend was sent; resumed, the
	// leader's "job changed" line that took suspend: false.
	suspendSent time.Time
	resumed     logEvent
	// httpEdited is the leader's "job changed" line that took the http
	// job's new schedule.
	httpEdited logEvent
	// frozenTerm is the frozen leader's term, thawed when it woke.
	frozenTerm int64
	thawed     time.Time
	// deleteSent is when the kubernetesJob object's deletion was sent;
	// deleted, the leader's "scheduled jobs applied" line that removed it.
	deleteSent time.Time
	deleted    logEvent
}

type interval struct {
	what     string
	from, to time.Time
}

// testJobsKinds: one ScheduledJob of each kind a team defines — sql (a
// counter that is not idempotent), http (to a receiver of the test's),
// command (a program that appends its slot's key to a file), kubernetesJob
// (a Job whose Pod runs slotprobe) — applied with kubectl to a release with
// the cluster source, all per second, live through scaling, a SIGKILLed
// leader, a leader frozen past its lease, a suspend and resume, a schedule
// edit, a trigger, the kubernetesJob object's deletion and a helm upgrade;
// then every job is suspended and the ledger, the counter, the receiver,
// the file, the batch Jobs and the objects' status are compared.
func testJobsKinds(t *testing.T, c *cluster) {
	began := time.Now()
	ctx := context.Background()
	rc := testenv.NewReceiver(t, nil)
	keysFile := commandKeysFile(t)
	r := c.install(t, "kinds", 2, "", map[string]any{
		"schedules":        map[string]any{"daily-stats": nil}, // only the ScheduledJobs
		"allowCommandJobs": true,
		"kubernetesJob":    map[string]any{"enabled": true},
	})
	k := &kindsRun{r: r}
	// The sql job's counter, in the ledger's database.
	for _, q := range []string{
		"CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n BIGINT NOT NULL)",
		"INSERT INTO counters (name, n) VALUES ('" + kindsSQL + "', 0)",
	} {
		if err := r.db.Exec(q).Error; err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	all := []string{kindsSQL, kindsHTTP, kindsCommand} // all but the one deleted on the way
	running := append(slices.Clone(all), kindsKube)
	r.applyJobs(t, map[string]map[string]any{
		kindsSQL: {"schedule": everySecond, "sql": map[string]any{"statements": []any{
			"UPDATE counters SET n = n + 1 WHERE name = '" + kindsSQL + "'",
		}}},
		kindsHTTP:    {"schedule": everySecond, "http": map[string]any{"url": rc.URL() + "/" + kindsHTTP, "body": "{{.Key}}"}},
		kindsCommand: {"schedule": everySecond, "command": map[string]any{"args": []any{appendKey, keysFile}}},
		kindsKube: {"schedule": everySecond, "kubernetesJob": map[string]any{
			// Every Job stays, to be counted: the kind deletes the oldest
			// beyond the limit.
			"successfulJobsHistoryLimit": 100000,
			"template":                   probeJobTemplate(),
		}},
	})
	leader := r.waitLeader(t, "", 30*time.Second)
	r.waitRunning(t, running...)
	r.waitProgress(t, "after kubectl apply", began, 3, running...)
	t.Logf("installed, %v running on %s (%s)", running, leader, time.Since(began).Round(time.Millisecond))

	// 1. Scale to 3.
	c.mustTool(t, c.kubectl, "scale", "deployment/"+r.fullname, "-n", r.ns, "--replicas=3")
	r.waitPods(t, 3)
	r.waitLeader(t, "", 30*time.Second)
	r.waitProgress(t, "after scaling to 3", time.Now(), 2, running...)

	// 2. The leader crashes (SIGKILL); its container restarts.
	k.hurtLeader(t, "SIGKILL", func(pod string) error { return c.runner.Kill(r.ns, pod) }, nil)
	r.waitPods(t, 3)
	r.waitProgress(t, "after the crash", time.Now(), 2, running...)

	// 3. The leader is frozen for longer than the lease, then woken.
	k.hurtLeader(t, "SIGSTOP", func(pod string) error { return c.runner.Freeze(r.ns, pod) }, func(pod string, at time.Time) error {
		time.Sleep(time.Until(at.Add(freeze))) // the freeze itself: time must pass
		k.thawed = time.Now()
		return c.runner.Thaw(r.ns, pod)
	})
	r.waitPods(t, 3)
	r.waitProgress(t, "after the freeze", time.Now(), 2, running...)

	// 4. The sql job is suspended for about 3 s, then resumed.
	k.suspendSent = time.Now()
	r.patchJob(t, kindsSQL, `{"spec":{"suspend":true}}`)
	suspended := r.waitChange(t, kindsSQL, k.suspendSent, func(e logEvent) bool { return e.raw["suspend"] == true })
	r.waitCondition(t, kindsSQL, spec.ConditionSuspended, metav1.ConditionTrue)
	time.Sleep(3*time.Second - time.Since(suspended.at)) // slots must pass while it is suspended
	resumeSent := time.Now()
	r.patchJob(t, kindsSQL, `{"spec":{"suspend":false}}`)
	k.resumed = r.waitChange(t, kindsSQL, resumeSent, func(e logEvent) bool { return e.raw["suspend"] == false })
	r.waitCondition(t, kindsSQL, spec.ConditionSuspended, metav1.ConditionFalse)
	r.waitProgress(t, "after the resume", k.resumed.at, 2, kindsSQL)

	// 5. The http job's schedule becomes every other second.
	editSent := time.Now()
	r.patchJob(t, kindsHTTP, `{"spec":{"schedule":"`+everyOther+`"}}`)
	k.httpEdited = r.waitChange(t, kindsHTTP, editSent, func(e logEvent) bool { return e.raw["schedule"] == everyOther })
	r.waitProgress(t, "after the schedule edit", k.httpEdited.at, 2, kindsHTTP)

	// 6. The command job is triggered once.
	c.mustTool(t, c.kubectl, "annotate", "sj", kindsCommand, "-n", r.ns, spec.TriggerAnnotation+"=x", "--overwrite")
	triggered := r.waitTriggered(t, kindsCommand, "x")

	// 7. The kubernetesJob object is deleted, its Jobs orphaned (the
	// garbage collector would delete them with it by default) to be
	// counted.
	k.deleteSent = time.Now()
	c.mustTool(t, c.kubectl, "delete", "sj", kindsKube, "-n", r.ns, "--cascade=orphan")
	k.deleted = r.waitLeaderLine(t, "the removal of "+kindsKube, r.jobsApplied, k.deleteSent, func(e logEvent) bool {
		return e.msg == "scheduled jobs applied" && slices.Contains(strings.Split(fmt.Sprint(e.raw["removed"]), ","), kindsKube)
	})

	// 8. helm upgrade --reuse-values with a value that changes no Pod.
	c.mustTool(t, c.helm, "upgrade", r.name, chartDir(), "-n", r.ns, "--reuse-values",
		"-f", r.values(map[string]any{"podDisruptionBudget": map[string]any{"maxUnavailable": 2}}), "--wait", "--timeout", "2m")
	pdb, err := c.admin.PolicyV1().PodDisruptionBudgets(r.ns).Get(ctx, r.fullname, metav1.GetOptions{})
	if err != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 2 {
		t.Errorf("after helm upgrade the PodDisruptionBudget is %+v (%v), want maxUnavailable 2", pdb, err)
	}
	dep, err := c.admin.AppsV1().Deployments(r.ns).Get(ctx, r.fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// helm's three-way merge puts replicaCount (2) back over kubectl scale.
	t.Logf("after helm upgrade --reuse-values the Deployment has %d replicas", *dep.Spec.Replicas)
	r.waitPods(t, int(*dep.Spec.Replicas))
	r.waitLeader(t, "", 30*time.Second)
	upgraded := time.Now()
	r.waitProgress(t, "after helm upgrade", upgraded, 2, all...)

	// Stop every job: suspended, no slot running.
	stopSent := time.Now()
	for _, name := range all {
		r.patchJob(t, name, `{"spec":{"suspend":true}}`)
	}
	for _, name := range all {
		r.waitChange(t, name, stopSent, func(e logEvent) bool { return e.raw["suspend"] == true })
		r.waitCondition(t, name, spec.ConditionSuspended, metav1.ConditionTrue)
	}
	r.waitNoneRunning(t)
	t.Logf("all jobs suspended, none running (%s)", time.Since(began).Round(time.Millisecond))

	runs := r.runsByJob(t)
	t.Run("sql", func(t *testing.T) { k.checkSQL(t, runs[kindsSQL]) })
	t.Run("http", func(t *testing.T) { k.checkHTTP(t, runs[kindsHTTP], rc) })
	t.Run("command", func(t *testing.T) { k.checkCommand(t, runs[kindsCommand], keysFile, triggered) })
	t.Run("status", func(t *testing.T) { k.checkStatus(t, runs, all) })
	t.Run("kubernetesJob", func(t *testing.T) { k.checkKube(t, runs[kindsKube]) })
	t.Run("deleted", func(t *testing.T) { k.checkDeleted(t, runs[kindsKube]) })
	t.Run("frozen-leader", func(t *testing.T) { k.checkFrozen(t, runs) })
	for job := range runs {
		if !slices.Contains(running, job) {
			t.Errorf("job_runs has rows of job %q", job)
		}
	}
	t.Run("being-deleted", func(t *testing.T) { k.checkBeingDeleted(t, rc) })
	r.expectMissed = func(e logEvent) bool {
		return e.msg == "slots missed while suspended" && e.raw["job"] == kindsSQL
	}
	r.checkObserved(t)
	t.Logf("scenario took %s", time.Since(began).Round(time.Millisecond))
}

// commandKeysFile creates the file the command job's program appends to,
// writable by the controller's user (the pod runner runs it as the Pod's
// non-root user) in a directory it can reach.
func commandKeysFile(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "leasecron-e2e-kinds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "keys")
	for _, err := range []error{os.Chmod(dir, 0o755), os.WriteFile(path, nil, 0o666), os.Chmod(path, 0o666)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// applyJobs writes one ScheduledJob per spec into a manifest and applies it
// with kubectl.
func (r *release) applyJobs(t *testing.T, specs map[string]map[string]any) {
	t.Helper()
	var docs []string
	for _, name := range sortedKeys(specs) {
		b, err := json.Marshal(map[string]any{"apiVersion": spec.APIVersion, "kind": spec.KindName,
			"metadata": map[string]any{"name": name}, "spec": specs[name]})
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	manifest := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(manifest, []byte(strings.Join(docs, "\n---\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.c.mustTool(t, r.c.kubectl, "apply", "-n", r.ns, "-f", manifest)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// patchJob merge-patches a ScheduledJob with kubectl.
func (r *release) patchJob(t *testing.T, name, patch string) {
	t.Helper()
	r.c.mustTool(t, r.c.kubectl, "patch", "sj", name, "-n", r.ns, "--type", "merge", "-p", patch)
}

// scheduledJob reads a ScheduledJob of the release's namespace.
func (r *release) scheduledJob(ctx context.Context, name string) (*spec.ScheduledJob, error) {
	u, err := dynamic.NewForConfigOrDie(r.c.cp.AdminConfig()).Resource(clustersource.Resource).Namespace(r.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var sj spec.ScheduledJob
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &sj); err != nil {
		return nil, err
	}
	return &sj, nil
}

// waitScheduledJob polls the ScheduledJob name until ok returns "" (else
// what is missing) and returns it; it fails the test after timeout.
func (r *release) waitScheduledJob(t *testing.T, name string, timeout time.Duration, ok func(*spec.ScheduledJob) string) *spec.ScheduledJob {
	t.Helper()
	var sj *spec.ScheduledJob
	last := ""
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var err error
		if sj, err = r.scheduledJob(ctx, name); err != nil {
			last = err.Error()
			return false, nil
		}
		last = ok(sj)
		return last == "", nil
	})
	if err != nil {
		t.Fatalf("ScheduledJob %s after %s: %s", name, timeout, last)
	}
	return sj
}

// waitRunning waits until each ScheduledJob is Ready for its generation
// and has a last success.
func (r *release) waitRunning(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		r.waitScheduledJob(t, name, time.Minute, func(sj *spec.ScheduledJob) string {
			ready := meta.FindStatusCondition(sj.Status.Conditions, spec.ConditionReady)
			switch {
			case ready == nil || ready.Status != metav1.ConditionTrue || sj.Status.ObservedGeneration != sj.Generation:
				return fmt.Sprintf("Ready %+v, observed generation %d of %d", ready, sj.Status.ObservedGeneration, sj.Generation)
			case sj.Status.LastSuccessfulTime == nil:
				return "no last success"
			}
			return ""
		})
	}
}

// waitCondition waits until the ScheduledJob's status has the condition,
// for its current generation.
func (r *release) waitCondition(t *testing.T, name, typ string, want metav1.ConditionStatus) {
	t.Helper()
	r.waitScheduledJob(t, name, 30*time.Second, func(sj *spec.ScheduledJob) string {
		c := meta.FindStatusCondition(sj.Status.Conditions, typ)
		if c == nil || c.Status != want || c.ObservedGeneration != sj.Generation {
			return fmt.Sprintf("condition %s is %+v at generation %d, want %s", typ, c, sj.Generation, want)
		}
		return ""
	})
}

// waitTriggered waits until the ScheduledJob's status records the trigger
// value and the ledger has its slot succeeded, and returns the slot.
func (r *release) waitTriggered(t *testing.T, name, value string) time.Time {
	t.Helper()
	sj := r.waitScheduledJob(t, name, 30*time.Second, func(sj *spec.ScheduledJob) string {
		if sj.Status.LastTrigger != value || sj.Status.LastTriggerTime == nil {
			return fmt.Sprintf("last trigger %q at %v, want %q", sj.Status.LastTrigger, sj.Status.LastTriggerTime, value)
		}
		return ""
	})
	slot := sj.Status.LastTriggerTime.UTC()
	var run jobs.JobRun
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := r.db.WithContext(ctx).Where("job = ? AND slot = ?", name, slot).Take(&run).Error
		return err == nil && run.Status == jobs.StatusSucceeded, nil
	})
	if err != nil {
		t.Fatalf("the triggered slot %s of %s has no succeeded row in job_runs within 30s (row %+v)", slot.Format(time.RFC3339Nano), name, run)
	}
	return slot
}

// waitChange waits until the current Lease holder logs "job changed" for
// job after since with a line ok accepts — its job loop took the new
// definition, between slots: no slot of the old one runs after it — and
// returns the line.
func (r *release) waitChange(t *testing.T, job string, since time.Time, ok func(logEvent) bool) logEvent {
	t.Helper()
	return r.waitLeaderLine(t, "the change of "+job, r.jobChanges, since, func(e logEvent) bool { return e.raw["job"] == job && ok(e) })
}

// waitLeaderLine waits until one of lines, logged by the current Lease
// holder after since, is one ok accepts, and returns it.
func (r *release) waitLeaderLine(t *testing.T, what string, lines func() []logEvent, since time.Time, ok func(logEvent) bool) logEvent {
	t.Helper()
	var got logEvent
	holder := ""
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		h, err := r.holder(ctx)
		if err != nil {
			return false, nil
		}
		holder = h
		for _, e := range lines() {
			if e.pod == h && e.at.After(since) && ok(e) {
				got = e
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		var seen []string
		for _, e := range lines() {
			if e.at.After(since) {
				seen = append(seen, fmt.Sprintf("%s %s: %v", e.at.Format("15:04:05.000"), e.pod, e.raw))
			}
		}
		t.Fatalf("the leader %s did not log %s within 30s; such lines since %s:\n%s",
			holder, what, since.Format("15:04:05.000"), strings.Join(seen, "\n"))
	}
	return got
}

// waitProgress waits until each job has n slots succeeded after since (by
// the ledger's finished_at).
func (r *release) waitProgress(t *testing.T, what string, since time.Time, n int, names ...string) {
	t.Helper()
	got := map[string]int64{}
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var rows []struct {
			Job string
			N   int64
		}
		err := r.db.WithContext(ctx).Model(&jobs.JobRun{}).Select("job, COUNT(*) AS n").
			Where("status = ? AND finished_at > ? AND job IN ?", jobs.StatusSucceeded, since.UTC(), names).Group("job").Scan(&rows).Error
		if err != nil {
			return false, nil
		}
		got = map[string]int64{}
		for _, row := range rows {
			got[row.Job] = row.N
		}
		for _, name := range names {
			if got[name] < int64(n) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%s: want %d slots of each of %v succeeded after %s, got %v", what, n, names, since.Format("15:04:05.000"), got)
	}
}

// waitNoneRunning waits until job_runs has no running row.
func (r *release) waitNoneRunning(t *testing.T) {
	t.Helper()
	var n int64
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := r.db.WithContext(ctx).Model(&jobs.JobRun{}).Where("status = ?", jobs.StatusRunning).Count(&n).Error
		return err == nil && n == 0, nil
	})
	if err != nil {
		t.Fatalf("job_runs still has %d running rows a minute after every job was suspended", n)
	}
}

// runsByJob returns every job_runs row, by job, in slot order.
func (r *release) runsByJob(t *testing.T) map[string][]jobs.JobRun {
	t.Helper()
	var runs []jobs.JobRun
	if err := r.db.Order("job, slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string][]jobs.JobRun{}
	for _, run := range runs {
		run.Slot = run.Slot.UTC()
		out[run.Job] = append(out[run.Job], run)
	}
	return out
}

// hurtLeader does harm to the leader and waits until another process
// leads; then, if given, undo undoes it (with the harm's time). The
// time without a leader is recorded as an outage.
func (k *kindsRun) hurtLeader(t *testing.T, what string, harm func(pod string) error, undo func(pod string, at time.Time) error) {
	t.Helper()
	r := k.r
	leader := r.waitLeader(t, "", 30*time.Second)
	before := r.term(t)
	r.drainLeading()
	at := time.Now()
	if err := harm(leader); err != nil {
		t.Fatal(err)
	}
	ev := r.awaitLeading(t, at, leaseDuration+10*time.Second)
	if what == "SIGSTOP" {
		if ev.pod == leader {
			t.Fatalf("the frozen leader %s led again", leader)
		}
		k.frozenTerm = before.Term
	}
	if undo != nil {
		if err := undo(leader, at); err != nil {
			t.Fatal(err)
		}
	}
	after := r.term(t)
	if after.Term <= before.Term {
		t.Errorf("%s: the term did not move on: %d -> %d", what, before.Term, after.Term)
	}
	k.outages = append(k.outages, interval{what, at, ev.at})
	t.Logf("%s: leader %s; %s leads (term %d -> %d) after %s", what, leader, ev.pod, before.Term, after.Term, ev.at.Sub(at).Round(time.Millisecond))
}

// succeeded returns the rows that succeeded, and reports the others.
func succeeded(t *testing.T, runs []jobs.JobRun) []jobs.JobRun {
	t.Helper()
	var out []jobs.JobRun
	for _, run := range runs {
		if run.Status != jobs.StatusSucceeded {
			t.Errorf("%s is %s after %d attempts (%s), holder %s", jobs.SlotKey(run.Job, run.Slot), run.Status, run.Attempts, run.Error, run.Holder)
			continue
		}
		out = append(out, run)
	}
	if len(out) < 3 {
		t.Fatalf("only %d succeeded slots", len(out))
	}
	return out
}

// checkSQL: the counter is the number of succeeded slots (exactly-once
// effect), no slot is in job_runs twice, and between the first and the last
// every second's slot is there but those the suspend skipped — the one gap
// allowed, after the suspend was sent (less applySlack) and up to the
// leader's taking the resume, and exactly as many slots as the leader logged
// missed. Slots that passed while no leader existed are all there: each
// outage is a few seconds, far inside the catch-up window (48h) and limit
// (100), so the next leader runs every one of them.
func (k *kindsRun) checkSQL(t *testing.T, runs []jobs.JobRun) {
	var n int64
	if err := k.r.db.Raw("SELECT n FROM counters WHERE name = ?", kindsSQL).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	ok := succeeded(t, runs)
	if n != int64(len(ok)) {
		t.Errorf("the counter is %d, but job_runs has %d succeeded slots: the UPDATE ran %+d times beyond once per slot", n, len(ok), n-int64(len(ok)))
	}
	seen := map[time.Time]bool{}
	var gaps []string
	missing := 0
	for i, run := range runs {
		if seen[run.Slot] {
			t.Errorf("slot %s is in job_runs twice", run.Slot.Format(time.RFC3339Nano))
		}
		seen[run.Slot] = true
		if !run.Slot.Equal(run.Slot.Truncate(time.Second)) {
			t.Errorf("slot %s is not a whole second", run.Slot.Format(time.RFC3339Nano))
		}
		if i == 0 {
			continue
		}
		prev := runs[i-1].Slot
		if run.Slot.Sub(prev) <= time.Second {
			continue
		}
		first, last := prev.Add(time.Second), run.Slot.Add(-time.Second)
		gap := int(run.Slot.Sub(prev)/time.Second) - 1
		desc := fmt.Sprintf("%s…%s (%d slots)", first.Format(time.TimeOnly), last.Format(time.TimeOnly), gap)
		if first.Before(k.suspendSent.Add(-applySlack)) || last.After(k.resumed.at) {
			t.Errorf("slots %s are missing: not while the job was suspended (suspend sent %s, resume taken by the leader %s)%s",
				desc, k.suspendSent.Format("15:04:05.000"), k.resumed.at.Format("15:04:05.000"), k.during(first, last))
			continue
		}
		gaps = append(gaps, desc)
		missing += gap
	}
	if len(gaps) != 1 {
		t.Errorf("gaps while suspended: %v, want exactly one", gaps)
	}
	logged := 0
	for _, e := range k.r.missedLines() {
		if e.msg == "slots missed while suspended" && e.raw["job"] == kindsSQL {
			m, _ := e.raw["missed"].(float64)
			logged += int(m)
		}
	}
	if logged != missing {
		t.Errorf("the leader logged %d slots missed while suspended, job_runs lacks %d", logged, missing)
	}
	t.Logf("sql: %d slots %s…%s, %d succeeded, counter %d; skipped while suspended: %v", len(runs),
		runs[0].Slot.Format(time.TimeOnly), runs[len(runs)-1].Slot.Format(time.TimeOnly), len(ok), n, gaps)
}

// during names the outages an interval overlaps, for failure messages.
func (k *kindsRun) during(from, to time.Time) string {
	var out []string
	for _, o := range k.outages {
		if !from.After(o.to) && !to.Before(o.from.Add(-time.Second)) {
			out = append(out, fmt.Sprintf("%s %s…%s", o.what, o.from.Format("15:04:05.000"), o.to.Format("15:04:05.000")))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; during the leaderless time after " + strings.Join(out, ", ") + ", which the next leader must catch up"
}

// checkHTTP: every succeeded slot was delivered at least once; every
// delivery carries its slot's one key (as Idempotency-Key and as the body)
// and belongs to a succeeded slot; a key delivered twice is allowed
// (at-least-once) and counted. After the leader took the new schedule,
// slots are on even seconds only.
func (k *kindsRun) checkHTTP(t *testing.T, runs []jobs.JobRun, rc *testenv.Receiver) {
	ok := succeeded(t, runs)
	rows := map[string]bool{}
	for _, run := range ok {
		rows[jobs.SlotKey(run.Job, run.Slot)] = true
		if run.Slot.After(k.httpEdited.at) && run.Slot.Second()%2 != 0 {
			t.Errorf("slot %s is after the leader took the schedule %q (%s)", run.Slot.Format(time.TimeOnly), everyOther, k.httpEdited.at.Format("15:04:05.000"))
		}
	}
	all := rc.Deliveries()
	per := testenv.PerKey(all)
	keysOfSlot := map[time.Time]map[string]bool{}
	for _, d := range all {
		key := d.Key()
		slot, ok := keySlot(key)
		switch {
		case d.Path != "/"+kindsHTTP || !strings.HasPrefix(key, kindsHTTP+"@") || !ok:
			t.Errorf("a delivery to %s with Idempotency-Key %q", d.Path, key)
			continue
		case d.Body != key:
			t.Errorf("delivery of %s has the body %q", key, d.Body)
		case !rows[key]:
			t.Errorf("%s was delivered, but job_runs has no succeeded row for it", key)
		}
		if keysOfSlot[slot] == nil {
			keysOfSlot[slot] = map[string]bool{}
		}
		keysOfSlot[slot][key] = true
	}
	for slot, ks := range keysOfSlot {
		if len(ks) != 1 {
			t.Errorf("slot %s was delivered with %d keys: %v", slot.Format(time.RFC3339Nano), len(ks), keys(ks))
		}
	}
	for key := range rows {
		if per[key] == 0 {
			t.Errorf("job_runs says %s succeeded, but the receiver never got it", key)
		}
	}
	t.Logf("http: %d slots, %d succeeded, %d deliveries of %d keys; delivered more than once (allowed): %v",
		len(runs), len(ok), len(all), len(per), twice(per))
}

// checkCommand: every succeeded slot's key is in the program's file; every
// line of the file is the key of a succeeded slot; a key twice is allowed
// (at-least-once: a frozen leader's program ran on while the next leader
// ran the slot again); the triggered slot ran.
func (k *kindsRun) checkCommand(t *testing.T, runs []jobs.JobRun, file string, triggered time.Time) {
	ok := succeeded(t, runs)
	rows := map[string]bool{}
	for _, run := range ok {
		rows[jobs.SlotKey(run.Job, run.Slot)] = true
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	per := map[string]int{}
	lines := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key := sc.Text()
		lines++
		per[key]++
		if !rows[key] {
			t.Errorf("the program appended %q, which is not the key of a succeeded slot", key)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for key := range rows {
		if per[key] == 0 {
			t.Errorf("job_runs says %s succeeded, but its key is not in the program's file", key)
		}
	}
	trigger := jobs.SlotKey(kindsCommand, triggered)
	if !rows[trigger] || per[trigger] == 0 {
		t.Errorf("the triggered slot %s: succeeded %v, in the file %d times", trigger, rows[trigger], per[trigger])
	}
	t.Logf("command: %d slots, %d succeeded (the triggered %s among them), %d lines of %d keys; more than once (allowed): %v",
		len(runs), len(ok), triggered.Format(time.RFC3339Nano), lines, len(per), twice(per))
}

// checkStatus: kubectl get scheduledjobs shows the CRD's columns and one
// row per object, each suspended; each object's lastSuccessfulTime is its
// latest succeeded slot in the ledger (to the second: the API server keeps
// whole seconds), and it is Suspended.
func (k *kindsRun) checkStatus(t *testing.T, runs map[string][]jobs.JobRun, names []string) {
	r := k.r
	for _, name := range names {
		var latest time.Time
		for _, run := range runs[name] {
			if run.Status == jobs.StatusSucceeded && run.Slot.After(latest) {
				latest = run.Slot
			}
		}
		want := latest.Truncate(time.Second)
		// A status whose only change is its times (the last success, the
		// next slot going away) is written within 10 s.
		sj := r.waitScheduledJob(t, name, 20*time.Second, func(sj *spec.ScheduledJob) string {
			if got := sj.Status.LastSuccessfulTime; got == nil || !got.UTC().Equal(want) {
				return fmt.Sprintf("lastSuccessfulTime %v, want the ledger's latest succeeded slot %s", got, want.Format(time.RFC3339))
			}
			if next := sj.Status.NextScheduleTime; next != nil {
				return fmt.Sprintf("nextScheduleTime %s while suspended", next.UTC().Format(time.RFC3339))
			}
			return ""
		})
		if !meta.IsStatusConditionTrue(sj.Status.Conditions, spec.ConditionSuspended) {
			t.Errorf("%s: conditions %+v, want Suspended=True", name, sj.Status.Conditions)
		}
	}
	out := r.c.mustTool(t, r.c.kubectl, "get", "scheduledjobs", "-n", r.ns)
	table := parseTable(t, out)
	if want := []string{"NAME", "SCHEDULE", "SUSPEND", "LAST SUCCESS", "NEXT", "AGE"}; !slices.Equal(table.header, want) {
		t.Errorf("kubectl get scheduledjobs prints the columns %q, want %q:\n%s", table.header, want, out)
	}
	var got []string
	for _, row := range table.rows {
		got = append(got, row["NAME"])
		// kubectl prints nothing for a string column without a value.
		if row["SUSPEND"] != "true" || row["NEXT"] != "" || row["LAST SUCCESS"] == "" || row["LAST SUCCESS"] == "<none>" {
			t.Errorf("kubectl get scheduledjobs: %v, want suspended, a last success and no next slot", row)
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(got, want) {
		t.Errorf("kubectl get scheduledjobs lists %v, want one row for each of %v:\n%s", got, want, out)
	}
	t.Logf("kubectl get scheduledjobs:\n%s", out)
}

// probeJobTemplate is the kubernetesJob jobs' Job: one Pod of probeImage
// (slotprobe, which exits 0), never retried, admitted by the namespace's
// restricted Pod Security.
func probeJobTemplate() map[string]any {
	return map[string]any{"spec": map[string]any{
		"backoffLimit": 0,
		"template": map[string]any{"spec": map[string]any{
			"restartPolicy": "Never",
			"securityContext": map[string]any{
				"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": map[string]any{"type": "RuntimeDefault"},
			},
			"containers": []any{map[string]any{
				"name": "probe", "image": probeImage,
				"securityContext": map[string]any{
					"allowPrivilegeEscalation": false, "capabilities": map[string]any{"drop": []any{"ALL"}},
				},
			}},
		}},
	}}
}

// checkKube: exactly one batch/v1 Job per slot that has a ledger row (the
// history limit is far above their number, so the kind deleted none), named
// after its slot, Complete for a succeeded slot; no Job without a row, and
// no slot with two Jobs by the leasecron.io/slot label.
func (k *kindsRun) checkKube(t *testing.T, runs []jobs.JobRun) {
	ok := succeeded(t, runs)
	list, err := k.r.c.admin.BatchV1().Jobs(k.r.ns).List(context.Background(), metav1.ListOptions{LabelSelector: kubejob.LabelJob + "=" + kindsKube})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*batchv1.Job{}
	bySlot := map[string][]string{}
	for i := range list.Items {
		j := &list.Items[i]
		byName[j.Name] = j
		bySlot[j.Labels[kubejob.LabelSlot]] = append(bySlot[j.Labels[kubejob.LabelSlot]], j.Name)
	}
	for label, names := range bySlot {
		if len(names) != 1 {
			t.Errorf("slot %s has %d Jobs: %v", label, len(names), names)
		}
	}
	rows := map[string]bool{}
	for _, run := range runs {
		name := kubejob.JobName(kindsKube, run.Slot)
		rows[name] = true
		j := byName[name]
		switch {
		case j == nil && k.collectedAtDeletion(run):
			t.Logf("%s: in flight when its ScheduledJob was deleted; its Job %s, created with an owner reference to the object being deleted, was removed by the garbage collector and the slot %s (README: Jobs on Kubernetes)", jobs.SlotKey(run.Job, run.Slot), name, run.Status)
			continue
		case j == nil:
			t.Errorf("%s has a %s row in job_runs, but no Job %s", jobs.SlotKey(run.Job, run.Slot), run.Status, name)
			continue
		case j.Labels[kubejob.LabelSlot] != kubejob.SlotLabel(run.Slot) || j.Annotations[kubejob.AnnotationKey] != jobs.SlotKey(run.Job, run.Slot):
			t.Errorf("Job %s has the labels %v and annotations %v, want those of slot %s", name, j.Labels, j.Annotations, run.Slot.Format(time.RFC3339Nano))
		}
		complete := false
		for _, c := range j.Status.Conditions {
			complete = complete || c.Type == batchv1.JobComplete && c.Status == "True"
		}
		if run.Status == jobs.StatusSucceeded && !complete {
			t.Errorf("%s succeeded, but its Job %s is not Complete: %+v", jobs.SlotKey(run.Job, run.Slot), name, j.Status.Conditions)
		}
	}
	for name := range byName {
		if !rows[name] {
			t.Errorf("Job %s has no row in job_runs", name)
		}
	}
	t.Logf("kubernetesJob: %d slots, %d succeeded, %d Jobs", len(runs), len(ok), len(list.Items))
}

// collectedAtDeletion: run is the slot that was in flight when the
// kubernetesJob object was deleted (due before the leader removed the job)
// and did not succeed: the kind created its Job with an owner reference to
// the object being deleted, which `--cascade=orphan` does not protect (the
// orphaning covers the Jobs that exist when it runs), so the garbage
// collector deleted it, and every retry's Job, until the slot gave up.
func (k *kindsRun) collectedAtDeletion(run jobs.JobRun) bool {
	return run.Status == jobs.StatusFailed && run.Slot.Before(k.deleted.at) && run.Slot.After(k.deleteSent.Add(-10*time.Second)) &&
		strings.Contains(run.Error, "was deleted before it finished")
}

// checkDeleted: the deleted kubernetesJob object ran no slot that started
// after the leader removed it, and at most one started after the deletion
// was sent (the one the loop may have begun before the change reached it).
func (k *kindsRun) checkDeleted(t *testing.T, runs []jobs.JobRun) {
	var late []string
	for _, run := range runs {
		if run.StartedAt == nil || !run.StartedAt.After(k.deleteSent) {
			continue
		}
		if k.collectedAtDeletion(run) {
			continue // retried to the end, as a running slot is (see checkKube)
		}
		desc := fmt.Sprintf("%s (started %s)", jobs.SlotKey(run.Job, run.Slot), run.StartedAt.UTC().Format("15:04:05.000"))
		late = append(late, desc)
		if run.StartedAt.After(k.deleted.at) {
			t.Errorf("%s started after the leader removed the job at %s", desc, k.deleted.at.Format("15:04:05.000"))
		}
	}
	if len(late) > 1 {
		t.Errorf("%d slots started after the deletion was sent at %s, want at most the one running then: %v", len(late), k.deleteSent.Format("15:04:05.000"), late)
	}
	t.Logf("deleted at %s (removed by the leader at %s); slots started since: %v", k.deleteSent.Format("15:04:05.000"), k.deleted.at.Format("15:04:05.000"), late)
}

// checkBeingDeleted: a ScheduledJob being deleted — deletionTimestamp set,
// kept in the API by a finalizer, as during foreground deletion or while
// the garbage collector orphans its Jobs — starts no new slot, as a
// CronJob being deleted starts no Job. A per-second http job with a
// finalizer of the test's is deleted; for 3 s (time must pass for slots to
// come due) no slot after the deletion (plus applySlack) may be delivered.
// Then the finalizer goes and so does the object.
func (k *kindsRun) checkBeingDeleted(t *testing.T, rc *testenv.Receiver) {
	r := k.r
	const name, finalizer = "held-hook", "e2e.leasecron.io/hold"
	b, err := json.Marshal(map[string]any{"apiVersion": spec.APIVersion, "kind": spec.KindName,
		"metadata": map[string]any{"name": name, "finalizers": []any{finalizer}},
		"spec":     map[string]any{"schedule": everySecond, "http": map[string]any{"url": rc.URL() + "/" + name, "body": "{{.Key}}"}}})
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(t.TempDir(), name+".json")
	if err := os.WriteFile(manifest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r.c.mustTool(t, r.c.kubectl, "apply", "-n", r.ns, "-f", manifest)
	defer func() {
		// Let it go, whatever happened.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.c.tool(ctx, r.c.kubectl, "patch", "sj", name, "-n", r.ns, "--type", "merge", "-p", `{"metadata":{"finalizers":null}}`); err != nil {
			t.Errorf("removing the finalizer: %v", err)
		}
	}()
	delivered := func(after time.Time) []string {
		var out []string
		for _, d := range rc.Deliveries("/" + name) {
			if slot, ok := keySlot(d.Key()); ok && slot.After(after) {
				out = append(out, d.Key())
			}
		}
		return out
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return len(delivered(time.Time{})) >= 2, nil
	}); err != nil {
		t.Fatalf("%s delivered %d slots within 30s of kubectl apply", name, len(delivered(time.Time{})))
	}
	r.c.mustTool(t, r.c.kubectl, "delete", "sj", name, "-n", r.ns, "--wait=false")
	sj, err := r.scheduledJob(context.Background(), name)
	if err != nil || sj.DeletionTimestamp == nil {
		t.Fatalf("%s after kubectl delete: %+v, %v; want it there with a deletionTimestamp (finalizer %s)", name, sj, err, finalizer)
	}
	deleting := sj.DeletionTimestamp.UTC()
	time.Sleep(3 * time.Second) // slots come due while it is being deleted
	if late := delivered(deleting.Add(applySlack)); len(late) > 0 {
		t.Errorf("%s, being deleted since %s (deletionTimestamp; a finalizer holds it), still ran %d slots after it: %v",
			name, deleting.Format(time.RFC3339), len(late), late)
	}
}

// checkFrozen: the leader frozen past its lease committed nothing once it
// woke: no row of its term was finished after the thaw.
func (k *kindsRun) checkFrozen(t *testing.T, runs map[string][]jobs.JobRun) {
	if k.frozenTerm == 0 || k.thawed.IsZero() {
		t.Fatal("no leader was frozen")
	}
	for _, rs := range runs {
		for _, run := range rs {
			if run.Fence == k.frozenTerm && run.FinishedAt != nil && run.FinishedAt.After(k.thawed) {
				t.Errorf("%s was recorded %s under the frozen leader's term %d at %s, after it was thawed at %s",
					jobs.SlotKey(run.Job, run.Slot), run.Status, run.Fence, run.FinishedAt.UTC().Format("15:04:05.000"), k.thawed.Format("15:04:05.000"))
			}
		}
	}
}

// table is a kubectl table: the header's columns and each row by column.
type table struct {
	header []string
	rows   []map[string]string
}

// parseTable splits kubectl's default output at the header's column
// starts (values such as a cron schedule contain single spaces; columns are
// at least three apart).
func parseTable(t *testing.T, out string) table {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatalf("no table: %q", out)
	}
	head := lines[0]
	var starts []int
	for i := 0; i < len(head); i++ {
		if head[i] != ' ' && (i == 0 || strings.HasPrefix(head[max(i-2, 0):i], "  ")) {
			starts = append(starts, i)
		}
	}
	cell := func(line string, c int) string {
		from := starts[c]
		if from >= len(line) {
			return ""
		}
		to := len(line)
		if c+1 < len(starts) && starts[c+1] < to {
			to = starts[c+1]
		}
		return strings.TrimSpace(line[from:to])
	}
	var tb table
	for c := range starts {
		tb.header = append(tb.header, cell(head, c))
	}
	for _, line := range lines[1:] {
		row := map[string]string{}
		for c, name := range tb.header {
			row[name] = cell(line, c)
		}
		tb.rows = append(tb.rows, row)
	}
	return tb
}

// twice lists the keys counted more than once, as key×n, sorted.
func twice(per map[string]int) []string {
	var out []string
	for k, n := range per {
		if n > 1 {
			out = append(out, fmt.Sprintf("%s×%d", k, n))
		}
	}
	sort.Strings(out)
	return out
}
