package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestE2E runs every scenario against one control plane, one pod runner and
// one MariaDB server; see the package comment.
func TestE2E(t *testing.T) {
	begin := time.Now()
	c := startCluster(t)
	t.Logf("control plane and pod runner up in %s", time.Since(begin).Round(time.Millisecond))

	t.Run("binary", func(t *testing.T) { testBinary(t) })
	t.Run("install", func(t *testing.T) { testInstall(t, c) })
	t.Run("scale", func(t *testing.T) { testScale(t, c) })
	t.Run("delete-leader", func(t *testing.T) { testDeleteLeader(t, c) })
	t.Run("crash-leader", func(t *testing.T) { testCrashLeader(t, c) })
	t.Run("upgrade-schedule", func(t *testing.T) { testUpgrade(t, c) })
	t.Run("jobs-live", func(t *testing.T) { testJobsLive(t, c) })
	t.Run("jobs-cluster", func(t *testing.T) { testJobsCluster(t, c) })
	t.Run("kinds", func(t *testing.T) { testJobsKinds(t, c) })
	t.Logf("suite took %s", time.Since(begin).Round(time.Millisecond))
}

// testBinary checks the binary under test carries the version ldflags.
func testBinary(t *testing.T) {
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("leasecron version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), version) {
		t.Fatalf("leasecron version = %q, want it to name %s (version ldflags not applied?)", out, version)
	}
}

// testInstall: helm install with 3 replicas and a per-second schedule, then
// on the same release Pod Security admission, RBAC, helm test and uninstall.
func testInstall(t *testing.T, c *cluster) {
	r := c.install(t, "main", 3, everySecond)
	ctx := context.Background()
	leader := r.waitLeader(t, "", 30*time.Second)
	t.Logf("leader: %s", leader)
	r.waitSlots(t, time.Now(), 5)

	leases, err := c.admin.CoordinationV1().Leases(r.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Items) != 1 || leases.Items[0].Name != r.fullname {
		t.Fatalf("leases in %s: %v, want exactly %s", r.ns, leaseNames(leases.Items), r.fullname)
	}
	if h := deref(leases.Items[0].Spec.HolderIdentity); h != leader {
		t.Fatalf("lease holder %q, want the leader %s", h, leader)
	}
	pods := r.waitPods(t, 3)
	if !hasPod(pods, leader) {
		t.Fatalf("lease holder %s is not one of the Pods %v", leader, podNames(pods))
	}
	// The leader recorded its election as an Event (RBAC on events works).
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := c.admin.CoreV1().Events(r.ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=LeaderElection"})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Lease" && strings.Contains(e.Message, leader) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("no LeaderElection Event naming %s: %v", leader, err)
	}
	runs := r.checkLedger(t, everySecond)
	for _, run := range runs {
		if run.Holder != leader {
			t.Errorf("slot %s was run by %s, but %s has led throughout", run.Slot.UTC().Format(time.TimeOnly), run.Holder, leader)
		}
	}
	r.checkObserved(t)

	t.Run("pod-security-restricted", func(t *testing.T) {
		ns, err := c.admin.CoreV1().Namespaces().Get(ctx, r.ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Fatalf("namespace labels %v", ns.Labels)
		}
		// Enforcement is real: a Pod without the restricted settings is refused...
		bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "unrestricted"}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: imageRepo + ":" + imageTag}}}}
		_, err = c.admin.CoreV1().Pods(r.ns).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
			t.Fatalf("creating a Pod without a security context in %s: err = %v, want Forbidden by PodSecurity", r.ns, err)
		}
		// ...while the chart's Pods were admitted: all replicas exist and the
		// ReplicaSet reported no failed creation.
		pods, err := r.livePods(ctx)
		if err != nil || len(pods) != 3 {
			t.Fatalf("live pods: %d (%v), want 3", len(pods), err)
		}
		// The runner ran them as the chart's non-root user, with fsGroup as a
		// supplementary group (that is how the 0440 DSN file is readable).
		for _, p := range pods {
			st := p.Status.ContainerStatuses
			if len(st) != 1 || st[0].State.Running == nil {
				t.Fatalf("%s: container not running: %+v", p.Name, st)
			}
			status, err := os.ReadFile("/proc/" + strings.TrimPrefix(st[0].ContainerID, "testenv://") + "/status")
			if err != nil {
				t.Fatalf("%s: %v", p.Name, err)
			}
			for _, want := range []string{"Uid:\t65532\t", "Gid:\t65532\t", "Groups:\t65532"} {
				if !strings.Contains(string(status), want) {
					t.Errorf("%s: process status lacks %q:\n%s", p.Name, want, status)
				}
			}
		}
		evs, err := c.admin.CoreV1().Events(r.ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedCreate"})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			t.Errorf("FailedCreate: %s: %s", e.InvolvedObject.Name, e.Message)
		}
	})

	t.Run("auth-can-i", func(t *testing.T) {
		lease := "leases.coordination.k8s.io/" + r.fullname
		r.checkPermissions(t, []permission{
			{"get", lease, true},
			{"update", lease, true},
			{"list", lease, true},
			{"watch", lease, true},
			{"create", "leases.coordination.k8s.io", true},
			{"create", "events", true},
			{"patch", "events", false},
			{"create", "events.events.k8s.io", false},
			{"get", "secrets", false},
			{"list", "secrets", false},
			{"get", "secrets/" + r.fullname + "-db", false},
			{"list", "pods", false},
			{"get", "pods", false},
			{"update", "leases.coordination.k8s.io/other", false},
			{"get", "leases.coordination.k8s.io/other", false},
			{"update", "leases.coordination.k8s.io", false},
			{"list", "leases.coordination.k8s.io", false},
			{"delete", lease, false},
			{"patch", lease, false},
			{"create", "pods", false},
		})
		// The same with a real token of the ServiceAccount.
		as := kubernetes.NewForConfigOrDie(r.serviceAccountConfig(t))
		own, err := as.CoordinationV1().Leases(r.ns).Get(ctx, r.fullname, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get own lease with the ServiceAccount's token: %v", err)
		}
		other := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: r.ns}}
		if other, err = c.admin.CoordinationV1().Leases(r.ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer c.admin.CoordinationV1().Leases(r.ns).Delete(ctx, "other", metav1.DeleteOptions{})
		other.Spec.HolderIdentity = own.Spec.HolderIdentity
		if _, err := as.CoordinationV1().Leases(r.ns).Update(ctx, other, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("updating another Lease with the ServiceAccount's token: err = %v, want Forbidden", err)
		}
		if _, err := as.CoreV1().Secrets(r.ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("listing Secrets with the ServiceAccount's token: err = %v, want Forbidden", err)
		}
	})

	t.Run("helm-test", func(t *testing.T) {
		c.mustTool(t, c.helm, "test", r.name, "-n", r.ns, "--timeout", "2m")
		p, err := c.admin.CoreV1().Pods(r.ns).Get(ctx, r.fullname+"-test-verify", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodSucceeded {
			t.Fatalf("test pod phase %s", p.Status.Phase)
		}
		t.Logf("leasecron verify in the test Pod:\n%s", c.runner.Logs(r.ns, p.Name))
	})

	t.Run("uninstall", func(t *testing.T) {
		r.checkLedger(t, everySecond)
		c.mustTool(t, c.helm, "uninstall", r.name, "-n", r.ns, "--wait", "--timeout", "2m")
		leader, _ := r.holder(ctx)
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := c.admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.sel.String()})
			return err == nil && len(pods.Items) == 0, nil
		})
		if err != nil {
			t.Fatalf("controller pods still there a minute after helm uninstall: %v", err)
		}
		if logs := c.runner.Logs(r.ns, leader); strings.Contains(logs, `"level":"ERROR"`) {
			t.Errorf("the leader %s logged errors while stopping:\n%s", leader, tail(logs, 10))
		}
		l, err := c.admin.CoordinationV1().Leases(r.ns).Get(ctx, r.fullname, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("lease after uninstall: %v", err)
		}
		if h := deref(l.Spec.HolderIdentity); h != "" {
			t.Errorf("after helm uninstall the Lease is still held by %q (renewed %s): the leader did not release it; its log:\n%s",
				h, l.Spec.RenewTime, tail(c.runner.Logs(r.ns, h), 15))
		}
		r.checkObserved(t)
	})
}

func testScale(t *testing.T, c *cluster) {
	r := c.install(t, "scale", 3, everySecond)
	r.waitLeader(t, "", 30*time.Second)
	r.waitSlots(t, time.Now(), 2)
	for _, n := range []int{5, 1, 3} {
		c.mustTool(t, c.kubectl, "scale", "deployment/"+r.fullname, "-n", r.ns, fmt.Sprintf("--replicas=%d", n))
		began := time.Now()
		pods := r.waitPods(t, n)
		leader := r.waitLeader(t, "", 30*time.Second)
		r.waitSlots(t, time.Now(), 2)
		t.Logf("scaled to %d in %s: pods %v, leader %s", n, time.Since(began).Round(time.Millisecond), podNames(pods), leader)
	}
	r.checkLedger(t, everySecond)
	r.checkObserved(t)
}

func testDeleteLeader(t *testing.T, c *cluster) {
	r := c.install(t, "delete", 3, everySecond)
	leader := r.waitLeader(t, "", 30*time.Second)
	r.waitSlots(t, time.Now(), 3)
	r.drainLeading()

	deleted := time.Now()
	c.mustTool(t, c.kubectl, "delete", "pod", leader, "-n", r.ns, "--wait=false")
	next := r.waitLeader(t, leader, 10*time.Second)
	held := time.Since(deleted)
	ev := r.awaitLeading(t, deleted, 10*time.Second)
	t.Logf("graceful handover %s -> %s: Lease held by the new leader %s after the delete, leading (new term %v) after %s",
		leader, next, held.Round(time.Millisecond), ev.raw["term"], ev.at.Sub(deleted).Round(time.Millisecond))
	if ev.pod == leader {
		t.Fatalf("the deleted Pod %s leads again", leader)
	}
	r.waitPods(t, 3)
	r.waitSlots(t, time.Now(), 3)
	logs := c.runner.Logs(r.ns, leader)
	for _, want := range []string{`"msg":"released the lease"`, `"msg":"shut down"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the deleted leader's log lacks %s:\n%s", want, tail(logs, 15))
		}
	}
	r.checkLedger(t, everySecond)
	r.checkObserved(t)
}

func testCrashLeader(t *testing.T, c *cluster) {
	r := c.install(t, "crash", 3, everySecond)
	ctx := context.Background()
	leader := r.waitLeader(t, "", 30*time.Second)
	r.waitSlots(t, time.Now(), 3)

	// 1. The leader's container crashes (SIGKILL) and is restarted in the
	// same Pod, as a kubelet does: no Pod goes away.
	crash := func(what string, kill func(pod string)) (logEvent, time.Time) {
		t.Helper()
		leader := r.waitLeader(t, "", 30*time.Second)
		before := r.term(t)
		r.drainLeading()
		killed := time.Now()
		kill(leader)
		ev := r.awaitLeading(t, killed, leaseDuration+10*time.Second)
		after := r.term(t)
		took := ev.at.Sub(killed)
		t.Logf("%s: leader %s SIGKILLed; %s leads (term %d -> %d) after %s (lease duration %s)",
			what, leader, ev.pod, before.Term, after.Term, took.Round(time.Millisecond), leaseDuration)
		if after.Term <= before.Term {
			t.Errorf("term did not move on after the crash: %d -> %d", before.Term, after.Term)
		}
		r.waitSlots(t, ev.at.Add(2*time.Second), 2)
		runs := r.checkLedger(t, everySecond)
		caught := 0
		for _, run := range runs {
			s := run.Slot
			if s.After(killed) && !s.After(ev.at) {
				caught++
				if run.Fence < after.Term {
					t.Errorf("slot %s, due while nobody led, was run under fence %d, before the new term %d",
						s.UTC().Format(time.TimeOnly), run.Fence, after.Term)
				}
			}
		}
		t.Logf("%s: %d slots due while nobody led were caught up exactly once by the new leader", what, caught)
		return ev, killed
	}

	_, _ = crash("container crash", func(pod string) {
		if err := c.runner.Kill(r.ns, pod); err != nil {
			t.Fatal(err)
		}
	})
	// The Deployment keeps its 3 replicas; the crashed container was restarted.
	pods := r.waitPods(t, 3)
	if !hasPod(pods, leader) {
		t.Errorf("the crashed Pod %s is gone: %v", leader, podNames(pods))
	}
	for _, p := range pods {
		if p.Name != leader {
			continue
		}
		st := p.Status.ContainerStatuses
		if len(st) != 1 || st[0].RestartCount < 1 || st[0].LastTerminationState.Terminated == nil ||
			st[0].LastTerminationState.Terminated.ExitCode != 137 {
			t.Errorf("crashed Pod %s: container status %+v, want a restart after exit code 137", p.Name, st)
		}
	}

	// 2. The leader's Pod is force-deleted: its process is SIGKILLed at once,
	// the Lease is not released, and a follower takes over after the lease
	// duration.
	ev, _ := crash("force delete", func(pod string) {
		c.mustTool(t, c.kubectl, "delete", "pod", pod, "-n", r.ns, "--grace-period=0", "--force")
	})
	if pods, err := r.livePods(ctx); err == nil && !hasPod(pods, ev.pod) {
		t.Errorf("new leader %s is not a live Pod", ev.pod)
	}
	r.waitPods(t, 3)
	r.checkObserved(t)
}

func testUpgrade(t *testing.T, c *cluster) {
	r := c.install(t, "upgrade", 3, everySecond)
	old := r.waitPods(t, 3)
	oldHash := old[0].Labels["pod-template-hash"]
	r.hashSchedule(oldHash, everySecond)
	r.waitLeader(t, "", 30*time.Second)
	r.waitSlots(t, time.Now(), 3)

	began := time.Now()
	c.mustTool(t, c.helm, "upgrade", r.name, chartDir(), "-n", r.ns, "--reuse-values",
		"-f", r.values(map[string]any{"schedules": map[string]any{"daily-stats": everyOther}}), "--wait", "--timeout", "2m")
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods = r.waitPods(t, 3)
		for _, p := range pods {
			if h := p.Labels["pod-template-hash"]; h == oldHash || h == "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("rolling update did not replace the Pods: %v", podNames(pods))
	}
	newHash := pods[0].Labels["pod-template-hash"]
	r.hashSchedule(newHash, everyOther)
	leader := r.waitLeader(t, "", 30*time.Second)
	t.Logf("rolling update done in %s: leader %s", time.Since(began).Round(time.Millisecond), leader)
	done := time.Now()
	r.waitSlots(t, done, 3)

	runs := r.checkLedger(t, everySecond)
	newRuns := 0
	for _, run := range runs {
		if r.scheduleOf(run.Holder, "") == everyOther {
			newRuns++
		}
		if run.Slot.After(done) && run.Slot.UTC().Second()%2 != 0 {
			t.Errorf("slot %s after the upgrade is not on the new schedule %q", run.Slot.UTC().Format(time.TimeOnly), everyOther)
		}
	}
	if newRuns < 3 {
		var rows []string
		for _, run := range runs {
			rows = append(rows, fmt.Sprintf("%s by %s (%s)", run.Slot.UTC().Format(time.TimeOnly), run.Holder, r.scheduleOf(run.Holder, "?")))
		}
		t.Errorf("only %d slots were run by Pods with the new schedule (rollout done %s):\n%s", newRuns, done.Format(time.TimeOnly), strings.Join(rows, "\n"))
	}
	r.checkObserved(t)
}

// permission is a question to `kubectl auth can-i` about the release's
// ServiceAccount and the answer wanted.
type permission struct {
	verb, resource string
	want           bool
}

// checkPermissions asks the API server each question, as the release's
// ServiceAccount, in the release's namespace unless flags say otherwise
// (such as "-n", "default", or "--subresource=status"), and reports every
// answer that is not the one wanted.
func (r *release) checkPermissions(t *testing.T, ps []permission, flags ...string) {
	t.Helper()
	sa := "system:serviceaccount:" + r.ns + ":" + r.fullname
	ctx := context.Background()
	for _, p := range ps {
		args := append([]string{"auth", "can-i", p.verb, p.resource, "-n", r.ns, "--as", sa}, flags...)
		out, err := r.c.tool(ctx, r.c.kubectl, args...)
		answer := strings.TrimSpace(out)
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && answer == "no") {
			t.Fatal(err)
		}
		if got := answer == "yes"; got != p.want {
			t.Errorf("kubectl %s = %v, want %v", strings.Join(args, " "), got, p.want)
		}
	}
}

// serviceAccountConfig is a client configuration with a fresh token of the
// release's ServiceAccount (a TokenRequest, valid 10 minutes).
func (r *release) serviceAccountConfig(t *testing.T) *rest.Config {
	t.Helper()
	tr, err := r.c.admin.CoreV1().ServiceAccounts(r.ns).CreateToken(context.Background(), r.fullname, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr[int64](600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{Host: r.c.cp.Host(), BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: r.c.cp.CAData()}}
}

func leaseNames(ls []coordinationv1.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Name)
	}
	return out
}

func podNames(ps []corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func hasPod(ps []corev1.Pod, name string) bool {
	for _, p := range ps {
		if p.Name == name {
			return true
		}
	}
	return false
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func ptr[T any](v T) *T { return &v }

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
