package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

const (
	// image is what the releases' Deployments name; the pod runner runs the
	// binary under test for it.
	imageRepo = "registry.invalid/leasecron"
	imageTag  = "e2e"
	// probeImage runs internal/testenv/cmd/slotprobe (it exits 0): the
	// image of the kubernetesJob jobs' Pods.
	probeImage = "registry.invalid/slotprobe:e2e"

	everySecond = "* * * * * *"
	everyOther  = "*/2 * * * * *"

	leaseDuration = 3 * time.Second
)

// cluster is the suite's shared control plane and pod runner.
type cluster struct {
	cp      *kube.ControlPlane
	runner  *kube.PodRunner
	admin   kubernetes.Interface
	helm    string
	kubectl string
	home    string

	mu       sync.Mutex
	releases map[string]*release // by namespace
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{releases: map[string]*release{}, home: t.TempDir()}
	var err error
	// Tools first: a missing one fails at once, before servers start.
	if c.helm, err = kube.ToolPath("helm"); err != nil {
		t.Fatal(err)
	}
	if c.kubectl, err = kube.ToolPath("kubectl"); err != nil {
		t.Fatal(err)
	}
	c.cp = kube.Start(t, kube.Options{ControllerManager: true})
	c.admin = kubernetes.NewForConfigOrDie(c.cp.AdminConfig())
	c.runner = c.cp.StartPodRunner(t, kube.PodRunnerOptions{
		Images: func(ref string) (kube.Image, bool) {
			switch ref {
			case imageRepo + ":" + imageTag:
				// The distroless image: ENTRYPOINT ["/leasecron"], CMD ["run"].
				return kube.Image{Entrypoint: []string{binary}, Cmd: []string{"run"},
					Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/home/nonroot"}}, true
			case probeImage:
				return kube.Image{Entrypoint: []string{slotProbe}}, true
			}
			return kube.Image{}, false
		},
		KubeconfigEnv: "LEASECRON_KUBECONFIG",
		OnLog:         c.onLog,
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pod logs (tails):\n%s", c.runner.LogTails(40))
		}
	})
	return c
}

// tool runs helm or kubectl with the admin kubeconfig and returns stdout.
func (c *cluster) tool(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.cp.AdminKubeconfig(), "HOME="+c.home,
		"XDG_CACHE_HOME="+filepath.Join(c.home, ".cache"), "XDG_CONFIG_HOME="+filepath.Join(c.home, ".config"),
		"XDG_DATA_HOME="+filepath.Join(c.home, ".local", "share"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

func (c *cluster) mustTool(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := c.tool(ctx, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s (%s)", filepath.Base(bin), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return out
}

// logEvent is one JSON log line of one Pod's process.
type logEvent struct {
	pod string
	msg string
	at  time.Time
	raw map[string]any
}

func (c *cluster) onLog(namespace, pod, _ string, line []byte) {
	var m map[string]any
	if json.Unmarshal(line, &m) != nil {
		return
	}
	c.mu.Lock()
	r := c.releases[namespace]
	c.mu.Unlock()
	if r == nil {
		return
	}
	msg, _ := m["msg"].(string)
	r.logged(logEvent{pod: pod, msg: msg, at: time.Now(), raw: m})
}

// release is one helm release in a namespace of its own, with its own
// database, observed from start to end.
type release struct {
	c         *cluster
	t         *testing.T
	name, ns  string
	fullname  string
	dsn       string
	db        *gorm.DB
	sel       labels.Selector
	valuesDir string
	values0   map[string]any // the values it was installed with

	events chan logEvent // "leading" events

	mu        sync.Mutex
	pods      map[string]*podSeen // every Pod of the release ever seen, by name
	holders   []holderSeen
	problems  []string
	warnings  []string          // WARN and ERROR log lines of the release's processes
	applied   []logEvent        // "jobs file applied" and "scheduled jobs applied" lines of the release's processes
	changed   []logEvent        // "job changed" lines: a leader's job loop took a new definition
	missed    []logEvent        // "slots missed…" lines
	scheds    map[string]string // pod-template-hash -> schedule
	podSched  map[string]string // pod name -> schedule
	started   time.Time
	stopWatch context.CancelFunc

	// expectMissed, if set, says which "slots missed…" lines the scenario
	// expects (checkObserved logs them); any other is a problem.
	expectMissed func(logEvent) bool
}

type podSeen struct {
	created, gone time.Time
	hash          string
}

type holderSeen struct {
	holder string
	at     time.Time
}

// values are the chart values every release starts with.
func baseValues(dsn string, replicas int, schedule string) map[string]any {
	return map[string]any{
		"replicaCount": replicas,
		"image":        map[string]any{"repository": imageRepo, "tag": imageTag, "pullPolicy": "Never"},
		"schedules":    map[string]any{"daily-stats": schedule},
		"timezone":     "UTC",
		"leaderElection": map[string]any{
			"leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "500ms",
		},
		"shutdownGracePeriod":           "2s",
		"terminationGracePeriodSeconds": 5,
		"database":                      map[string]any{"dsn": dsn},
		"logFormat":                     "json",
	}
}

// install creates a restricted namespace, a fresh MariaDB database and a helm
// release in it, waits until its Pods are Ready, and starts observing it.
// overrides replace top-level keys of baseValues. Cleanup uninstalls it (if
// still installed) and deletes the namespace.
func (c *cluster) install(t *testing.T, name string, replicas int, schedule string, overrides ...map[string]any) *release {
	t.Helper()
	ns := "e2e-" + name
	r := &release{c: c, t: t, name: name, ns: ns, fullname: name + "-leasecron",
		dsn: testenv.DSN(t, "mysql"), events: make(chan logEvent, 1000),
		pods: map[string]*podSeen{}, scheds: map[string]string{}, podSched: map[string]string{},
		valuesDir: t.TempDir()}
	r.sel = labels.SelectorFromSet(labels.Set{
		"app.kubernetes.io/name": "leasecron", "app.kubernetes.io/instance": name, "app.kubernetes.io/component": "controller",
	})
	ctx := context.Background()
	_, err := c.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns,
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	c.mu.Lock()
	c.releases[ns] = r
	c.mu.Unlock()
	t.Cleanup(func() { r.teardown() })

	dsn, err := model.ParseDSN(r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if r.db, err = model.Open(dctx, dsn, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}

	r.watch()
	r.started = time.Now()
	hctx, hcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer hcancel()
	began := time.Now()
	r.values0 = baseValues(r.dsn, replicas, schedule)
	for _, o := range overrides {
		maps.Copy(r.values0, o)
	}
	if _, err := c.tool(hctx, c.helm, "install", name, chartDir(), "-n", ns, "-f", r.values(r.values0),
		"--wait", "--timeout", "90s"); err != nil {
		r.diagnose()
		t.Fatal(err)
	}
	t.Logf("helm install %s --wait: %s", name, time.Since(began).Round(time.Millisecond))
	r.waitPods(t, replicas)
	return r
}

// diagnose logs the state of the release's namespace and its Pods' output.
func (r *release) diagnose() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"get", "all,leases,events", "-n", r.ns, "-o", "wide"},
		{"get", "pods", "-n", r.ns, "-o", "yaml"},
	} {
		out, err := r.c.tool(ctx, r.c.kubectl, args...)
		r.t.Logf("kubectl %s (%v):\n%s", strings.Join(args, " "), err, out)
	}
	pods, _ := r.c.admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		r.t.Logf("--- output of %s:\n%s", p.Name, tail(r.c.runner.Logs(r.ns, p.Name), 30))
	}
}

func chartDir() string { return filepath.Join(repo, "charts", "leasecron") }

// values writes a values file and returns its path.
func (r *release) values(v map[string]any) string {
	f, err := os.CreateTemp(r.valuesDir, "values-*.json")
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(v); err != nil {
		r.t.Fatal(err)
	}
	return f.Name()
}

func (r *release) teardown() {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := r.c.tool(ctx, r.c.helm, "status", r.name, "-n", r.ns); err == nil && strings.Contains(out, "deployed") {
		if _, err := r.c.tool(ctx, r.c.helm, "uninstall", r.name, "-n", r.ns, "--wait", "--timeout", "1m"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	// Let the runner stop the processes before the namespace goes.
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := r.c.admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.sel.String()})
		return err == nil && len(pods.Items) == 0, nil
	})
	if r.stopWatch != nil {
		r.stopWatch()
	}
	if err := r.c.admin.CoreV1().Namespaces().Delete(ctx, r.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("cleanup: delete namespace %s: %v", r.ns, err)
	}
	r.c.mu.Lock()
	delete(r.c.releases, r.ns)
	r.c.mu.Unlock()
	if r.db != nil {
		_ = model.Close(r.db)
	}
}

// watch follows the release's Pods and its Lease with informers, recording
// every holder and checking that it is a Pod of the release that exists.
func (r *release) watch() {
	ctx, cancel := context.WithCancel(context.Background())
	r.stopWatch = cancel
	f := informers.NewSharedInformerFactoryWithOptions(r.c.admin, 0, informers.WithNamespace(r.ns))
	pods := f.Core().V1().Pods().Informer()
	_, _ = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.podEvent(o, false) },
		UpdateFunc: func(_, o any) { r.podEvent(o, false) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			r.podEvent(o, true)
		},
	})
	leases := f.Coordination().V1().Leases().Informer()
	_, _ = leases.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.leaseEvent(o) },
		UpdateFunc: func(_, o any) { r.leaseEvent(o) },
	})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
}

func (r *release) podEvent(o any, deleted bool) {
	p, ok := o.(*corev1.Pod)
	if !ok || !r.sel.Matches(labels.Set(p.Labels)) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.pods[p.Name]
	if s == nil {
		s = &podSeen{created: time.Now(), hash: p.Labels["pod-template-hash"]}
		r.pods[p.Name] = s
	}
	if deleted && s.gone.IsZero() {
		s.gone = time.Now()
	}
}

func (r *release) leaseEvent(o any) {
	l, ok := o.(*coordinationv1.Lease)
	if !ok {
		return
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.Name != r.fullname {
		return // other Leases are checked by listing them
	}
	if n := len(r.holders); n == 0 || r.holders[n-1].holder != holder {
		r.holders = append(r.holders, holderSeen{holder, now})
	}
	if holder == "" {
		return
	}
	// The informers' streams are not ordered against each other: allow a
	// Pod's creation or removal to be seen a little late.
	const slack = 2 * time.Second
	s := r.pods[holder]
	switch {
	case s == nil:
		go r.recheckHolder(holder, now)
	case !s.gone.IsZero() && now.Sub(s.gone) > slack:
		r.problems = append(r.problems, fmt.Sprintf("%s: Lease held by %s, a Pod removed %s earlier",
			now.Format("15:04:05.000"), holder, now.Sub(s.gone).Round(time.Millisecond)))
	}
}

func (r *release) recheckHolder(holder string, at time.Time) {
	time.Sleep(2 * time.Second) // the Pod's watch event may be in flight
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pods[holder] == nil {
		r.problems = append(r.problems, fmt.Sprintf("%s: Lease held by %q, which is not a Pod of the release",
			at.Format("15:04:05.000"), holder))
	}
}

func (r *release) logged(e logEvent) {
	switch {
	case e.msg == "jobs file applied" || e.msg == "scheduled jobs applied":
		r.mu.Lock()
		r.applied = append(r.applied, e)
		r.mu.Unlock()
	case e.msg == "job changed":
		r.mu.Lock()
		r.changed = append(r.changed, e)
		r.mu.Unlock()
	case e.msg == "leading":
		select {
		case r.events <- e:
		default:
		}
	case e.raw["level"] == "WARN" || e.raw["level"] == "ERROR":
		r.mu.Lock()
		r.warnings = append(r.warnings, fmt.Sprintf("%s %s: %v", e.at.Format("15:04:05.000"), e.pod, e.raw))
		if strings.HasPrefix(e.msg, "slots missed") {
			r.missed = append(r.missed, e)
		}
		r.mu.Unlock()
	}
}

// lines returns a copy of one of the release's lists of log lines.
func (r *release) lines(list *[]logEvent) []logEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logEvent(nil), *list...)
}

// missedLines returns the "slots missed…" lines logged so far.
func (r *release) missedLines() []logEvent { return r.lines(&r.missed) }

// jobChanges returns the "job changed" lines logged so far.
func (r *release) jobChanges() []logEvent { return r.lines(&r.changed) }

// awaitLeading returns the next "leading" log line logged after since.
func (r *release) awaitLeading(t *testing.T, since time.Time, timeout time.Duration) logEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-r.events:
			if e.at.After(since) {
				return e
			}
		case <-deadline:
			t.Fatalf("no process logged \"leading\" within %s", timeout)
		}
	}
}

// jobsApplied returns the "jobs file applied" lines (jobs.source=file) and
// "scheduled jobs applied" lines (cluster) logged so far.
func (r *release) jobsApplied() []logEvent { return r.lines(&r.applied) }

// podsSeen names every Pod of the release the watch has seen.
func (r *release) podsSeen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for name := range r.pods {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// drainLeading forgets queued "leading" events.
func (r *release) drainLeading() {
	for {
		select {
		case <-r.events:
		default:
			return
		}
	}
}

// lease returns the Lease's holder ("" when released or absent).
func (r *release) holder(ctx context.Context) (string, error) {
	l, err := r.c.admin.CoordinationV1().Leases(r.ns).Get(ctx, r.fullname, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// livePods returns the names of the release's Pods that are not being deleted.
func (r *release) livePods(ctx context.Context) ([]corev1.Pod, error) {
	list, err := r.c.admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.sel.String()})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitPods waits until the release has exactly n Pods, all Ready, and none
// being deleted or terminating.
func (r *release) waitPods(t *testing.T, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := r.c.admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.sel.String()})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		ready := 0
		for i := range pods {
			if podReady(&pods[i]) && pods[i].DeletionTimestamp == nil {
				ready++
			}
		}
		last = fmt.Sprintf("%d pods, %d ready", len(pods), ready)
		return len(pods) == n && ready == n, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d ready pods of %s: %v (last: %s)", n, r.name, err, last)
	}
	return pods
}

// waitLeader waits until the Lease is held by one of the live Pods and returns it.
func (r *release) waitLeader(t *testing.T, not string, timeout time.Duration) string {
	t.Helper()
	var holder string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		h, err := r.holder(ctx)
		if err != nil || h == "" || h == not {
			return false, nil
		}
		pods, err := r.livePods(ctx)
		if err != nil {
			return false, nil
		}
		for _, p := range pods {
			if p.Name == h {
				holder = h
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		h, _ := r.holder(context.Background())
		t.Fatalf("no live Pod of %s holds the Lease within %s (holder %q)", r.name, timeout, h)
	}
	return holder
}

// waitSlots waits until n slots due after since have succeeded.
func (r *release) waitSlots(t *testing.T, since time.Time, n int) {
	t.Helper()
	var got int64
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := r.db.WithContext(ctx).Model(&jobs.JobRun{}).
			Where("status = ? AND slot > ?", jobs.StatusSucceeded, since.UTC()).Count(&got).Error
		return err == nil && got >= int64(n), nil
	})
	if err != nil {
		t.Fatalf("waiting for %d slots after %s: %d succeeded: %v", n, since.Format("15:04:05.000"), got, err)
	}
}

// checkObserved reports every problem the observers found: Lease holders
// that were not Pods of the release, foreign Leases, missed slots (but those
// expectMissed allows).
func (r *release) checkObserved(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Error(p)
	}
	for _, e := range r.missed {
		if r.expectMissed != nil && r.expectMissed(e) {
			t.Logf("%s logged %q, as expected: %v", e.pod, e.msg, e.raw)
			continue
		}
		t.Errorf("%s logged %q: %v", e.pod, e.msg, e.raw)
	}
	var hs []string
	for _, h := range r.holders {
		name := h.holder
		if name == "" {
			name = "(released)"
		}
		hs = append(hs, fmt.Sprintf("%s %s", h.at.Format("15:04:05.000"), name))
	}
	t.Logf("Lease holders of %s: %s", r.name, strings.Join(hs, ", "))
	if len(r.warnings) > 0 {
		t.Logf("warnings and errors logged by %s's processes:\n%s", r.name, strings.Join(r.warnings, "\n"))
	}
}

// podSchedules records that Pods with the given pod-template-hash run schedule.
func (r *release) hashSchedule(hash, schedule string) {
	r.mu.Lock()
	r.scheds[hash] = schedule
	r.mu.Unlock()
}

func (r *release) scheduleOf(pod string, def string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.pods[pod]; s != nil {
		if sched, ok := r.scheds[s.hash]; ok {
			return sched
		}
	}
	return def
}

// checkLedger asserts exactly-once in the database: every job_runs row of
// daily-stats succeeded; each slot after the first is the next slot after
// its predecessor under the schedule of the Pod that ran it (so none is
// missing and none repeats); every statistics table holds exactly one row
// per date of a slot. It returns the rows.
func (r *release) checkLedger(t *testing.T, def string) []jobs.JobRun {
	t.Helper()
	var runs []jobs.JobRun
	if err := r.db.Order("slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	if len(runs) < 3 {
		t.Fatalf("only %d slots in job_runs", len(runs))
	}
	seen := map[time.Time]bool{}
	for i, run := range runs {
		if run.Job != "daily-stats" {
			t.Errorf("job_runs has a row for job %q", run.Job)
		}
		if run.Status != jobs.StatusSucceeded {
			t.Errorf("slot %s is %s after %d attempts (%s), holder %s", run.Slot.UTC().Format(time.TimeOnly), run.Status, run.Attempts, run.Error, run.Holder)
		}
		if seen[run.Slot.UTC()] {
			t.Errorf("slot %s appears twice in job_runs", run.Slot.UTC())
		}
		seen[run.Slot.UTC()] = true
		if i == 0 {
			continue
		}
		prev := runs[i-1].Slot.UTC()
		sched := r.scheduleOf(run.Holder, def)
		if want := nextSlot(sched, prev); !run.Slot.UTC().Equal(want) {
			t.Errorf("slot %s (run by %s, schedule %q) follows %s: want %s — a slot was lost or run out of schedule",
				run.Slot.UTC().Format(time.TimeOnly), run.Holder, sched, prev.Format(time.TimeOnly), want.Format(time.TimeOnly))
		}
	}
	dates := map[string]bool{}
	for _, run := range runs {
		dates[model.DateOf(run.Slot.UTC()).String()] = true
	}
	for _, s := range dailystats.Stats() {
		var rows []struct {
			Date model.Date
			N    int64
		}
		if err := r.db.Raw("SELECT date, COUNT(*) AS n FROM " + s.Table + " GROUP BY date").Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, row := range rows {
			got[row.Date.String()] = true
			if row.N != 1 {
				t.Errorf("%s has %d rows for %s, want 1", s.Table, row.N, row.Date)
			}
		}
		if len(got) != len(dates) {
			t.Errorf("%s has dates %v, want %v", s.Table, keys(got), keys(dates))
		}
		for d := range dates {
			if !got[d] {
				t.Errorf("%s has no row for %s", s.Table, d)
			}
		}
	}
	return runs
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// nextSlot is the first slot of schedule after t (the two schedules the
// suite uses).
func nextSlot(schedule string, t time.Time) time.Time {
	next := t.Truncate(time.Second).Add(time.Second)
	switch schedule {
	case everySecond:
		return next
	case everyOther:
		if next.Second()%2 == 1 {
			next = next.Add(time.Second)
		}
		return next
	}
	panic("nextSlot: unknown schedule " + schedule)
}

// term returns the release's current leadership term from the database.
func (r *release) term(t *testing.T) jobs.LeaderTerm {
	t.Helper()
	var lt jobs.LeaderTerm
	if err := r.db.Where("scope = ?", "lease:"+r.ns+"/"+r.fullname).First(&lt).Error; err != nil {
		t.Fatalf("leader_terms: %v", err)
	}
	return lt
}
