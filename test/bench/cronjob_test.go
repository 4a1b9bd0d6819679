//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/pkg/jobs"
)

// This file is issue 10's benchmark: leasecron's kubernetesJob kind side by
// side with the Kubernetes CronJob controller (kube-controller-manager's
// own), on one control plane. The measure is Job objects: when each one
// exists. The burst part runs no Pods (the templates say parallelism: 0);
// the catch-up part runs them with the test pod runner, because leasecron
// runs a job's slots one at a time and the next waits for the Job before it.

const (
	cronBurstJobs   = 100 // CronJobs and ScheduledJobs due at the same minute
	cronBurstTrials = 2   // each trial is a minute
	cronCatchUpJobs = 10  // of each, for the 3-hour outage
	cronOutage      = 3 * time.Hour
	cronCatchUpWait = 13 * time.Minute
)

var scheduledJobs = schema.GroupVersionResource{Group: "leasecron.io", Version: "v1alpha1", Resource: "scheduledjobs"}

// jobSeen is one Job object as a watch saw it.
type jobSeen struct {
	name    string
	seen    time.Time // the ADDED event's arrival
	created time.Time // metadata.creationTimestamp (whole seconds)
}

// jobWatch records every Job added in a namespace.
type jobWatch struct {
	mu   sync.Mutex
	jobs map[string]jobSeen
	stop func()
}

func watchJobs(t *testing.T, cs kubernetes.Interface, ns string) *jobWatch {
	t.Helper()
	w, err := cs.BatchV1().Jobs(ns).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jw := &jobWatch{jobs: map[string]jobSeen{}, stop: w.Stop}
	go func() {
		for ev := range w.ResultChan() {
			j, ok := ev.Object.(*batchv1.Job)
			if !ok || ev.Type != watch.Added {
				continue
			}
			now := time.Now()
			jw.mu.Lock()
			if _, dup := jw.jobs[j.Name]; !dup {
				jw.jobs[j.Name] = jobSeen{name: j.Name, seen: now, created: j.CreationTimestamp.Time}
			}
			jw.mu.Unlock()
		}
	}()
	t.Cleanup(w.Stop)
	return jw
}

// with returns the Jobs seen so far whose name starts with prefix.
func (jw *jobWatch) with(prefix string) []jobSeen {
	jw.mu.Lock()
	defer jw.mu.Unlock()
	var out []jobSeen
	for n, j := range jw.jobs {
		if strings.HasPrefix(n, prefix) {
			out = append(out, j)
		}
	}
	return out
}

// waitFor waits until n Jobs with prefix were seen or the deadline passes.
func (jw *jobWatch) waitFor(prefix string, n int, deadline time.Time) []jobSeen {
	for {
		got := jw.with(prefix)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lags are the times from due to each Job, by the watch and by the API
// server's creationTimestamp.
func lags(js []jobSeen, due time.Time) (seen, created []time.Duration) {
	for _, j := range js {
		seen = append(seen, j.seen.Sub(due))
		created = append(created, j.created.Sub(due))
	}
	slices.Sort(seen)
	slices.Sort(created)
	return seen, created
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// jobTemplate is the batch/v1 JobTemplateSpec of both kinds: no Pods with
// parallelism 0, one Pod of the pod runner's "bench/true" otherwise.
func jobTemplate(parallelism int32) batchv1.JobTemplateSpec {
	zero := int32(0)
	return batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
		Parallelism:  &parallelism,
		BackoffLimit: &zero,
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "work", Image: "bench/true"}},
		}},
	}}
}

func createCronJob(t *testing.T, cs kubernetes.Interface, ns, name, schedule string, parallelism int32) *batchv1.CronJob {
	t.Helper()
	utc := "Etc/UTC"
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       batchv1.CronJobSpec{Schedule: schedule, TimeZone: &utc, JobTemplate: jobTemplate(parallelism)},
	}
	out, err := cs.BatchV1().CronJobs(ns).Create(context.Background(), cj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func createScheduledJob(t *testing.T, dyn dynamic.Interface, ns, name, schedule string, parallelism int32) {
	t.Helper()
	jt := jobTemplate(parallelism)
	tmpl, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&jt)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "leasecron.io/v1alpha1",
		"kind":       "ScheduledJob",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"schedule":      schedule,
			"timeZone":      "UTC",
			"kubernetesJob": map[string]any{"template": tmpl},
		},
	}}
	if _, err := dyn.Resource(scheduledJobs).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// cronLeasecron starts one leasecron controller on the ScheduledJobs of ns,
// as the cluster's admin, with an SQLite ledger at dsn, and waits until it
// leads.
func cronLeasecron(t *testing.T, cp *kube.ControlPlane, ns, dsn string) *proc {
	t.Helper()
	p := start(t, "leasecron-"+ns, bin.leasecron, "run", "--mode", "lease", "--jobs-source", "cluster", "--allow-kubernetes-jobs",
		"--kubeconfig", cp.AdminKubeconfig(), "--lease-name", "leasecron", "--lease-namespace", ns, "--identity", "bench",
		"--database-dsn", dsn, "--http-addr", "127.0.0.1:0", "--log-format", "json", "--timezone", "UTC")
	p.mustAwait(t, "leading", 90*time.Second)
	return p
}

func benchCronJob(t *testing.T, r *report) {
	cp := kube.Start(t, kube.Options{ControllerManager: true})
	cp.InstallCRDs(t)
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	dyn := dynamic.NewForConfigOrDie(cp.AdminConfig())

	// Burst: 100 of each due at the same minute, in two namespaces.
	k8sNS, lcNS := cp.Namespace(t, "burst-cronjob"), cp.Namespace(t, "burst-leasecron")
	kw, lw := watchJobs(t, cs, k8sNS), watchJobs(t, cs, lcNS)
	lc := cronLeasecron(t, cp, lcNS, "sqlite://"+filepath.Join(t.TempDir(), "burst.db"))
	throttles := make(chan int, 1)
	go func() { throttles <- countEvents(lc, "Waited before sending request") }()
	type trialResult struct {
		k8sSeen, k8sCreated, lcSeen, lcCreated []time.Duration
	}
	var trials []trialResult
	for trial := 0; trial < cronBurstTrials; trial++ {
		due := time.Now().UTC().Truncate(time.Minute).Add(2 * time.Minute)
		schedule := fmt.Sprintf("%d %d %d %d *", due.Minute(), due.Hour(), due.Day(), int(due.Month()))
		prefix := fmt.Sprintf("t%d-", trial)
		for i := 0; i < cronBurstJobs; i++ {
			name := fmt.Sprintf("%s%03d", prefix, i)
			createCronJob(t, cs, k8sNS, name, schedule, 0)
			createScheduledJob(t, dyn, lcNS, name, schedule, 0)
		}
		t.Logf("trial %d: %d CronJobs and %d ScheduledJobs due at %s (schedule %q)", trial, cronBurstJobs, cronBurstJobs, due.Format(time.RFC3339), schedule)
		time.Sleep(time.Until(due))
		deadline := due.Add(90 * time.Second)
		k := kw.waitFor(prefix, cronBurstJobs, deadline)
		l := lw.waitFor(prefix, cronBurstJobs, deadline)
		if len(k) < cronBurstJobs || len(l) < cronBurstJobs {
			t.Errorf("trial %d: %d of %d CronJob Jobs, %d of %d leasecron Jobs within 90 s of the due time", trial, len(k), cronBurstJobs, len(l), cronBurstJobs)
		}
		var tr trialResult
		tr.k8sSeen, tr.k8sCreated = lags(k, due)
		tr.lcSeen, tr.lcCreated = lags(l, due)
		trials = append(trials, tr)
		t.Logf("trial %d: CronJob last %s (p50 %s), leasecron last %s (p50 %s)", trial,
			pct(tr.k8sSeen, 1), pct(tr.k8sSeen, 0.5), pct(tr.lcSeen, 1), pct(tr.lcSeen, 0.5))
	}
	_ = lc.cmd.Process.Kill()
	<-lc.done
	throttled := <-throttles
	t.Logf("leasecron logged %d client-go throttling waits", throttled)

	var burstRows [][]string
	cell := func(d []time.Duration) string {
		if len(d) == 0 {
			return "none"
		}
		return fmt.Sprintf("%s / %s / %s", round(pct(d, 0.5)), round(pct(d, 0.99)), round(pct(d, 1)))
	}
	for i, tr := range trials {
		burstRows = append(burstRows,
			[]string{fmt.Sprintf("%d", i+1), "Kubernetes CronJob controller", fmt.Sprintf("%d", len(tr.k8sSeen)), cell(tr.k8sSeen), cell(tr.k8sCreated)},
			[]string{fmt.Sprintf("%d", i+1), "leasecron `kubernetesJob`", fmt.Sprintf("%d", len(tr.lcSeen)), cell(tr.lcSeen), cell(tr.lcCreated)})
	}
	met := true
	for _, tr := range trials {
		if len(tr.lcSeen) < cronBurstJobs || len(tr.k8sSeen) == 0 || pct(tr.lcSeen, 1) >= pct(tr.k8sSeen, 1) {
			met = false
		}
	}
	r.add("Kubernetes Jobs: 100 due at once, side by side with CronJob",
		fmt.Sprintf("One control plane (etcd, kube-apiserver and kube-controller-manager %s, whose CronJob and Job controllers are the real ones); "+
			"%d CronJobs in one namespace and %d ScheduledJobs of kind `kubernetesJob` in another, all created about a minute before "+
			"the same minute, which both schedules name (`M H D Mon *`, UTC). leasecron is one `leasecron run --mode lease --jobs-source cluster "+
			"--allow-kubernetes-jobs` process with an SQLite ledger and the admin kubeconfig; it already leads when the objects are created. "+
			"Both kinds run at the same minute so that each meets the same load (the other's burst included) in the same time. "+
			"The measure is the Job objects: a watch on each namespace records each Job's ADDED event; the times are from the due minute "+
			"to that event, and to the API server's `creationTimestamp` (whole seconds, so it reads up to 1 s early), as p50 / p99 / last "+
			"of the %d. No Pods: the templates set `parallelism: 0`, so no pod runner is needed. %d trials, one a minute. "+
			"Target (issue 10): every Job created sooner than the CronJob controller creates them: **%s** (the test: leasecron's last Job "+
			"seen before CronJob's last, in every trial).%s",
			kubeVersion(t, cs), cronBurstJobs, cronBurstJobs, cronBurstJobs, len(trials), metWord(met), throttleNote(throttled)),
		[]string{"trial", "controller", "Jobs", "due → seen by the watch (p50 / p99 / last)", "due → creationTimestamp (p50 / p99 / last)"}, burstRows)

	catchUpRows, notes := cronCatchUp(t, cp, cs, dyn)
	r.add("Kubernetes Jobs: back after 3 hours down, side by side with CronJob",
		fmt.Sprintf("The same control plane; %d CronJobs and %d ScheduledJobs, each `* * * * *`, whose controller was stopped for %s. "+
			"Simulated: the CronJobs are created while kube-controller-manager runs with `--controllers=*,-cronjob-controller`, their "+
			"`status.lastScheduleTime` set to %s ago through the status subresource (no `startingDeadlineSeconds`), then kube-controller-manager "+
			"is restarted with every controller; leasecron's SQLite ledger is seeded with each job's last succeeded slot %s ago, the "+
			"ScheduledJobs are created, then the controller starts with the default catch-up window (48h) and limit (100). "+
			"Here the Jobs run: the test pod runner runs each Pod (`/bin/true`), because leasecron runs one slot of a job at a time "+
			"and each waits for its Job to complete; so leasecron's time includes %d Pods run one after another per job. "+
			"%d objects of each, not 100, so that 100 Pods per job fit on 2 cores. Times are from the controller's start "+
			"(leasecron: the process's start; CronJob: kube-controller-manager healthy again); Jobs counted over %s at most; leasecron's last is its %dth Job, or its last within that time.%s",
			cronCatchUpJobs, cronCatchUpJobs, cronOutage, cronOutage, cronOutage, jobs.DefaultCatchUpLimit, cronCatchUpJobs, cronCatchUpWait, cronCatchUpJobs*jobs.DefaultCatchUpLimit, notes),
		[]string{"controller", "missed slots per job", "Jobs created", "what it did", "first Job", "last Job"}, catchUpRows)
}

func throttleNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" leasecron's log has %d client-go `Waited before sending request` lines (client-side throttling; "+
		"client-go logs them rate-limited, so there were more waits) over the trials: its Jobs client runs at client-go's "+
		"default rate limit, 5 requests/s with a burst of 10, which alone puts its 100th create near 18 s; kube-controller-manager's "+
		"default is 20/s with a burst of 30, and the CronJob controller sends at least two requests per CronJob (the Job, then its status).", n)
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "not met"
}

func kubeVersion(t *testing.T, cs kubernetes.Interface) string {
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	return v.GitVersion
}

// cronCatchUp runs the 3-hour outage of both and returns the table's rows.
func cronCatchUp(t *testing.T, cp *kube.ControlPlane, cs kubernetes.Interface, dyn dynamic.Interface) ([][]string, string) {
	ctx := context.Background()
	k8sNS, lcNS := cp.Namespace(t, "catchup-cronjob"), cp.Namespace(t, "catchup-leasecron")
	cp.StartPodRunner(t, kube.PodRunnerOptions{Images: func(ref string) (kube.Image, bool) {
		return kube.Image{Entrypoint: []string{"/bin/true"}}, ref == "bench/true"
	}})
	kw, lw := watchJobs(t, cs, k8sNS), watchJobs(t, cs, lcNS)
	now := time.Now().UTC().Truncate(time.Minute)
	lastRun := now.Add(-cronOutage)
	missed := int(time.Since(lastRun) / time.Minute)

	// CronJob: created with the cronjob controller off, 3 h of history.
	cp.RestartControllerManager(t, "--controllers=*,-cronjob-controller")
	for i := 0; i < cronCatchUpJobs; i++ {
		cj := createCronJob(t, cs, k8sNS, fmt.Sprintf("c%02d", i), "* * * * *", 1)
		cj.Status.LastScheduleTime = &metav1.Time{Time: lastRun}
		if _, err := cs.BatchV1().CronJobs(k8sNS).UpdateStatus(ctx, cj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(cp.Dir(), "kube-controller-manager.log")
	logFrom := fileSize(logPath)
	cp.RestartControllerManager(t)
	kcmBack := time.Now()
	k := kw.waitFor("c", 2*cronCatchUpJobs, kcmBack.Add(75*time.Second)) // its catch-up job and the next minute's
	events, err := cs.CoreV1().Events(k8sNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	var tooMany string
	for _, e := range events.Items {
		if e.InvolvedObject.Kind != "CronJob" {
			continue
		}
		reasons[e.Reason] += int(max(e.Count, 1))
		if strings.Contains(strings.ToLower(e.Message), "too many missed") && tooMany == "" {
			tooMany = e.Message
		}
	}
	logLines := grepFrom(logPath, logFrom, "too many missed")
	t.Logf("CronJob: %d Jobs in %s; events by reason %v; %q; %d log lines with 'too many missed'", len(k), time.Since(kcmBack).Round(time.Second), reasons, tooMany, logLines)
	// Of those Jobs, the ones the catch-up made: scheduled before the restart.
	var caught []jobSeen
	for _, j := range k {
		if j.created.Before(kcmBack.Truncate(time.Minute).Add(time.Minute)) {
			caught = append(caught, j)
		}
	}
	kSeen, _ := lags(caught, kcmBack)
	what := fmt.Sprintf("one Job per CronJob, for the most recent missed minute; %d `TooManyMissedTimes` Events (%q); "+
		"%d `too many missed start times` lines in its log; the other %d missed minutes of each never run",
		reasons["TooManyMissedTimes"], tooMany, logLines, missed-1)
	rows := [][]string{{"Kubernetes CronJob controller", fmt.Sprintf("%d", missed), fmt.Sprintf("%d", len(caught)), what, round(pct(kSeen, 0)), round(pct(kSeen, 1))}}

	// leasecron: the ledger says each job last succeeded 3 h ago.
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "catchup.db")
	db := openMigrated(t, dsn)
	for i := 0; i < cronCatchUpJobs; i++ {
		name := fmt.Sprintf("l%02d", i)
		fin := lastRun.Add(time.Second)
		run := jobs.JobRun{Job: name, Slot: lastRun, Status: jobs.StatusSucceeded, Holder: "seed", Fence: 0, Attempts: 1, StartedAt: &lastRun, FinishedAt: &fin}
		if err := db.Create(&run).Error; err != nil {
			t.Fatal(err)
		}
		createScheduledJob(t, dyn, lcNS, name, "* * * * *", 1)
	}
	began := time.Now()
	lc := cronLeasecron(t, cp, lcNS, dsn)
	want := cronCatchUpJobs * min(missed, jobs.DefaultCatchUpLimit)
	l := lw.waitFor("l", want, began.Add(cronCatchUpWait))
	lSeen, _ := lags(l, began)
	_ = lc.cmd.Process.Kill()
	<-lc.done
	lwhat := fmt.Sprintf("one Job per missed slot, the %d most recent of each job, oldest first, one at a time per job; "+
		"the older %d of each reported missed", min(missed, jobs.DefaultCatchUpLimit), max(missed-jobs.DefaultCatchUpLimit, 0))
	if len(l) < want {
		lwhat += fmt.Sprintf("; only %d of the %d Jobs within %s", len(l), want, cronCatchUpWait)
	}
	rows = append(rows, []string{"leasecron `kubernetesJob`", fmt.Sprintf("%d", missed), fmt.Sprintf("%d", len(l)), lwhat, round(pct(lSeen, 0)), round(pct(lSeen, 1))})
	return rows, ""
}

// countEvents reads the events p logs until it exits and counts those
// whose message contains s.
func countEvents(p *proc, s string) int {
	n := 0
	for {
		select {
		case e := <-p.events:
			if strings.Contains(e.msg, s) {
				n++
			}
		case <-p.done:
			for {
				select {
				case e := <-p.events:
					if strings.Contains(e.msg, s) {
						n++
					}
				default:
					return n
				}
			}
		}
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// grepFrom counts the lines of path after offset that contain s.
func grepFrom(path string, offset int64, s string) int {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return 0
	}
	return strings.Count(strings.ToLower(string(b[offset:])), strings.ToLower(s))
}
