package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
)

// testJobsLive: the chart's `jobs.items`, from a file (jobs.source=file),
// edited with `helm upgrade` reach the running controllers without a
// restart. The release runs only its own jobs (schedules: {daily-stats:
// null}), per-second http jobs to a receiver of the test's. The upgrade removes hook-a, adds hook-b and changes hook-c's
// body; only the jobs ConfigMap changes, the pod runner refreshes the
// mounted file as a kubelet does, and each controller applies it.
//
// Asserted: the same two Pods (names, UIDs, container IDs, no restart, one
// ReplicaSet) before and after; both controllers log "jobs file applied"
// naming exactly those changes; within a bounded wait hook-b's deliveries
// arrive and hook-c's carry the new body, while hook-a delivers no slot
// after the change was applied; and once the release is uninstalled, every
// delivered key has exactly one succeeded job_runs row (and every succeeded
// row was delivered), no key came with two bodies, and daily-stats never ran.
func testJobsLive(t *testing.T, c *cluster) {
	began := time.Now()
	rc := testenv.NewReceiver(t, nil)
	before := []any{httpJob(rc, "hook-a", "a {{.Key}}"), httpJob(rc, "hook-c", "c1 {{.Key}}")}
	after := []any{httpJob(rc, "hook-b", "b {{.Key}}"), httpJob(rc, "hook-c", "c2 {{.Key}}")}
	r := c.install(t, "jobs-live", 2, "", map[string]any{
		"schedules": map[string]any{"daily-stats": nil}, // only the jobs below
		"jobs":      map[string]any{"source": "file", "items": before},
	})
	ctx := context.Background()
	leader := r.waitLeader(t, "", 30*time.Second)
	// delivered waits until path has n deliveries for which ok holds.
	delivered := func(what, path string, n int, timeout time.Duration, ok func(testenv.Delivery) bool) {
		t.Helper()
		got := 0
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
			got = 0
			for _, d := range rc.Deliveries(path) {
				if ok(d) {
					got++
				}
			}
			return got >= n, nil
		})
		if err != nil {
			t.Fatalf("%s: %d of %d deliveries to %s within %s", what, got, n, path, timeout)
		}
	}
	every := func(testenv.Delivery) bool { return true }
	delivered("before the upgrade", "/hook-a", 3, 30*time.Second, every)
	delivered("before the upgrade", "/hook-c", 3, 30*time.Second, every)
	podsBefore := r.waitPods(t, 2)
	t.Logf("installed, leader %s, hook-a and hook-c delivering (%s)", leader, time.Since(began).Round(time.Millisecond))

	upgraded := time.Now()
	c.mustTool(t, c.helm, "upgrade", r.name, chartDir(), "-n", r.ns, "--reuse-values",
		"-f", r.values(map[string]any{"jobs": map[string]any{"source": "file", "items": after}}), "--wait", "--timeout", "1m")

	// (c) Both controllers apply the new file: hook-b added, hook-c changed,
	// hook-a removed.
	var applied map[string]logEvent
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		applied = map[string]logEvent{}
		for _, e := range r.jobsApplied() {
			if e.at.After(upgraded) {
				applied[e.pod] = e
			}
		}
		return len(applied) == len(podsBefore), nil
	})
	if err != nil {
		t.Fatalf("%d of %d controllers logged \"jobs file applied\" within 20s of the upgrade: %v", len(applied), len(podsBefore), applied)
	}
	for _, p := range podsBefore {
		e, ok := applied[p.Name]
		if !ok {
			t.Fatalf("%s did not log \"jobs file applied\" (those that did: %v)", p.Name, applied)
		}
		if e.raw["added"] != "hook-b" || e.raw["changed"] != "hook-c" || e.raw["removed"] != "hook-a" {
			t.Errorf("%s: jobs file applied with added=%v changed=%v removed=%v, want hook-b, hook-c, hook-a", p.Name, e.raw["added"], e.raw["changed"], e.raw["removed"])
		}
		if logs := c.runner.Logs(r.ns, p.Name); !strings.Contains(logs, `"msg":"jobs file applied"`) {
			t.Errorf("%s's log has no \"jobs file applied\" line:\n%s", p.Name, tail(logs, 10))
		}
	}
	appliedAt := applied[leader].at
	if appliedAt.IsZero() {
		t.Fatalf("the leader %s did not apply the jobs file", leader)
	}
	t.Logf("the new jobs were applied by the leader %s after the upgrade was sent (helm upgrade --wait included)", appliedAt.Sub(upgraded).Round(time.Millisecond))

	// (b) hook-b delivers and hook-c carries its new body, for slots after
	// the change; hook-a delivers no such slot.
	after0 := func(d testenv.Delivery) bool { s, ok := keySlot(d.Key()); return ok && s.After(appliedAt) }
	delivered("after the upgrade", "/hook-b", 3, 15*time.Second, after0)
	delivered("after the upgrade", "/hook-c", 3, 15*time.Second, func(d testenv.Delivery) bool {
		return after0(d) && strings.HasPrefix(d.Body, "c2 ")
	})
	for _, d := range rc.Deliveries("/hook-a") {
		if after0(d) {
			t.Errorf("hook-a, removed, delivered %s, a slot after the change was applied at %s", d.Key(), appliedAt.Format("15:04:05.000"))
		}
	}
	for _, d := range rc.Deliveries("/hook-c") {
		if after0(d) && !strings.HasPrefix(d.Body, "c2 ") {
			t.Errorf("hook-c delivered %s with the old body %q after the change was applied", d.Key(), d.Body)
		}
	}

	// (a) The same Pods, never restarted, from the one ReplicaSet: the Pod
	// template did not change, so nothing rolled.
	podsAfter := r.waitPods(t, 2)
	if a, b := podIdentities(podsBefore), podIdentities(podsAfter); a != b {
		t.Errorf("the Pods changed across the upgrade:\nbefore: %s\nafter:  %s", a, b)
	}
	for _, p := range podsAfter {
		if st := p.Status.ContainerStatuses; len(st) != 1 || st[0].RestartCount != 0 || st[0].State.Running == nil {
			t.Errorf("%s: container status %+v, want running and never restarted", p.Name, st)
		}
	}
	if seen := r.podsSeen(); len(seen) != 2 {
		t.Errorf("the release had the Pods %v, want only the 2 it started with", seen)
	}
	rss, err := c.admin.AppsV1().ReplicaSets(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.sel.String()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rss.Items) != 1 {
		t.Errorf("%d ReplicaSets after the upgrade, want 1 (no rollout)", len(rss.Items))
	}
	if h, err := r.holder(ctx); err != nil || h != leader {
		t.Errorf("Lease holder after the upgrade %q (%v), want %s throughout", h, err, leader)
	}

	// Stop the release, then read the ledger.
	c.mustTool(t, c.helm, "uninstall", r.name, "-n", r.ns, "--wait", "--timeout", "1m")
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.sel.String()})
		return err == nil && len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("controller pods still there a minute after helm uninstall: %v", err)
	}

	// (d) Exactly once in the ledger, at least once at the receiver, one
	// body per key.
	var runs []jobs.JobRun
	if err := r.db.Order("job, slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	rows := map[string][]jobs.JobRun{}
	for _, run := range runs {
		if run.Job == "daily-stats" {
			t.Errorf("daily-stats ran (slot %s) although schedules.daily-stats is null", run.Slot.UTC().Format(time.RFC3339))
		}
		k := jobs.SlotKey(run.Job, run.Slot)
		rows[k] = append(rows[k], run)
	}
	bodies := map[string]map[string]bool{}
	all := rc.Deliveries()
	perKey := testenv.PerKey(all)
	for _, d := range all {
		k := d.Key()
		if bodies[k] == nil {
			bodies[k] = map[string]bool{}
		}
		bodies[k][d.Body] = true
		job, _, _ := strings.Cut(k, "@")
		if d.Path != "/"+job {
			t.Errorf("delivery of %s went to %s", k, d.Path)
		}
	}
	var twice []string
	for k, bs := range bodies {
		if len(bs) != 1 {
			t.Errorf("key %s was delivered with %d different bodies: %v", k, len(bs), keys(bs))
		}
		rs := rows[k]
		if len(rs) != 1 || rs[0].Status != jobs.StatusSucceeded {
			var st []string
			for _, r := range rs {
				st = append(st, fmt.Sprintf("%s after %d attempts by %s", r.Status, r.Attempts, r.Holder))
			}
			t.Errorf("delivered key %s has %d job_runs rows %v, want one succeeded", k, len(rs), st)
		}
		if n := perKey[k]; n > 1 {
			twice = append(twice, fmt.Sprintf("%s×%d", k, n))
		}
	}
	for k, rs := range rows {
		if rs[0].Status == jobs.StatusSucceeded && bodies[k] == nil {
			t.Errorf("job_runs says %s succeeded, but the receiver never got it", k)
		}
	}
	sort.Strings(twice)
	perJob := map[string]int{}
	for _, d := range all {
		job, _, _ := strings.Cut(d.Key(), "@")
		perJob[job]++
	}
	t.Logf("%d deliveries (%v), %d distinct keys, %d job_runs rows; delivered more than once (allowed, at-least-once): %v; step took %s",
		len(all), perJob, len(bodies), len(runs), twice, time.Since(began).Round(time.Millisecond))
	r.mu.Lock()
	for _, w := range r.warnings {
		if strings.Contains(w, "jobs file not applied") {
			t.Errorf("a controller could not apply the jobs file: %s", w)
		}
	}
	r.mu.Unlock()
	r.checkObserved(t)
}

// httpJob is a jobs.items item: a per-second http job called name that
// posts body to the receiver's /name.
func httpJob(rc *testenv.Receiver, name, body string) map[string]any {
	return map[string]any{"name": name, "spec": map[string]any{
		"schedule": everySecond,
		"http":     map[string]any{"url": rc.URL() + "/" + name, "body": body},
	}}
}

// keySlot is the slot of an Idempotency-Key "<job>@<RFC 3339>".
func keySlot(key string) (time.Time, bool) {
	_, s, ok := strings.Cut(key, "@")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// podIdentities is the Pods' names, UIDs and container IDs, sorted.
func podIdentities(pods []corev1.Pod) string {
	var ids []string
	for _, p := range pods {
		var cid string
		if st := p.Status.ContainerStatuses; len(st) == 1 {
			cid = st[0].ContainerID
		}
		ids = append(ids, fmt.Sprintf("%s/%s/%s", p.Name, p.UID, cid))
	}
	sort.Strings(ids)
	return strings.Join(ids, " ")
}
