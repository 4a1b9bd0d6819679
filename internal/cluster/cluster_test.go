package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/enginetest"
	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/pkg/httpjob"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/metrics"
	"github.com/leasecron/leasecron/pkg/spec"
	"github.com/leasecron/leasecron/pkg/sqljob"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var nsResource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// env is a control plane with the CRD, a namespace, and a ledger.
type env struct {
	client dynamic.Interface
	ns     string
	db     *gorm.DB
	sched  *jobs.Scheduler
	src    *Source
	fence  jobs.Fence
}

// start starts a Source on a fresh control plane; its scheduler reports to
// next (metrics.Metrics, say), if given, through the Source.
func start(t *testing.T, tune func(*Options), next ...jobs.Metrics) *env {
	t.Helper()
	cp := kube.Start(t, kube.Options{})
	client, err := dynamic.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cp.InstallCRDs(t)
	ns := "jobs"
	nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
	if _, err := client.Resource(nsResource).Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, "the ScheduledJob resource to be served", func() bool { return Check(ctx, client, ns) == nil })

	db := enginetest.OpenDB(t, "sqlite")
	if err := db.Exec("CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o := Options{
		Client: client, Namespace: ns, Catalog: spec.NewCatalog(sqljob.Kind{}),
		Env: spec.Env{Location: time.UTC, Dialect: "sqlite", Log: log}, DB: db, Log: log,
		StatusEvery: 100 * time.Millisecond, StatusMinInterval: 500 * time.Millisecond,
	}
	if tune != nil {
		tune(&o)
	}
	src, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	var m jobs.Metrics
	if len(next) > 0 {
		m = next[0]
	}
	sched, err := jobs.New(db, "leader", nil, jobs.Options{Log: log, Metrics: src.Observe(m)})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{client: client, ns: ns, db: db, sched: sched, src: src}
	runCtx, stop := context.WithCancel(ctx)
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- src.Run(runCtx, sched, ready) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Source.Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Source.Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the source never listed the ScheduledJobs")
	}
	return e
}

// lead makes the scheduler lead (a term, Lead) and tells the source.
func (e *env) lead(t *testing.T) {
	t.Helper()
	f, err := e.sched.Ledger().BeginTerm(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	e.fence = f
	ctx, stop := context.WithCancel(context.Background())
	drain := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- e.sched.Lead(ctx, drain, f) }()
	e.src.OnLead(true)
	t.Cleanup(func() {
		e.src.OnLead(false)
		close(drain)
		if err := <-done; err != nil {
			t.Errorf("Lead: %v", err)
		}
		stop()
	})
}

func await(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition
	}
}

func (e *env) res() dynamic.ResourceInterface { return e.client.Resource(Resource).Namespace(e.ns) }

// apply creates or replaces a ScheduledJob from YAML.
func (e *env) apply(t *testing.T, doc string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cur, err := e.res().Get(ctx, u.GetName(), metav1.GetOptions{})
	if err == nil {
		u.SetResourceVersion(cur.GetResourceVersion())
		_, err = e.res().Update(ctx, u, metav1.UpdateOptions{})
	} else {
		_, err = e.res().Create(ctx, u, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("apply %s: %v", u.GetName(), err)
	}
}

func (e *env) get(t *testing.T, name string) *spec.ScheduledJob {
	t.Helper()
	u, err := e.res().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sj := &spec.ScheduledJob{}
	if err := fromUnstructured(u, sj); err != nil {
		t.Fatal(err)
	}
	return sj
}

func (e *env) patch(t *testing.T, name, mergePatch string) {
	t.Helper()
	if _, err := e.res().Patch(context.Background(), name, types.MergePatchType, []byte(mergePatch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch %s: %v", name, err)
	}
}

func (e *env) counter(t *testing.T, name string) int {
	t.Helper()
	var n int
	if err := e.db.Raw("SELECT n FROM counters WHERE name = ?", name).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) succeeded(t *testing.T, job string) []jobs.JobRun {
	t.Helper()
	var rs []jobs.JobRun
	for _, r := range enginetest.Rows(t, e.db, job) {
		if r.Status == jobs.StatusSucceeded {
			rs = append(rs, r)
		}
	}
	return rs
}

func counterJob(name, schedule string, extra string) string {
	return fmt.Sprintf(`apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata:
  name: %s
spec:
  schedule: %q
%s  sql:
    statements:
      - INSERT INTO counters (name, n) VALUES ('%s', 0) ON CONFLICT (name) DO NOTHING
      - UPDATE counters SET n = n + 1 WHERE name = '%s'
`, name, schedule, extra, name, name)
}

func condition(sj *spec.ScheduledJob, typ string) (metav1.Condition, bool) {
	for _, c := range sj.Status.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return metav1.Condition{}, false
}

// The whole life of a ScheduledJob on the leader: it runs once per slot
// (a counter that is not idempotent equals the succeeded slots), its status
// follows the ledger, suspend stops it within a second, a trigger runs one
// slot now, a refused spec is reported and runs nothing while the other
// job runs on, and a deleted object stops its job.
func TestScheduledJobsRunAndReport(t *testing.T) {
	e := start(t, nil)
	e.lead(t)
	e.apply(t, counterJob("tick", "* * * * * *", ""))

	await(t, "tick's status to show a success", func() bool {
		st := e.get(t, "tick").Status
		return st.LastSuccessfulTime != nil && st.NextScheduleTime != nil && st.ObservedGeneration == 1
	})
	sj := e.get(t, "tick")
	if c, ok := condition(sj, spec.ConditionReady); !ok || c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready = %+v, want True", c)
	}
	if c, ok := condition(sj, spec.ConditionSuspended); !ok || c.Status != metav1.ConditionFalse {
		t.Fatalf("Suspended = %+v, want False", c)
	}

	// A refused spec: Ready=False with the reason and an Event; tick runs on.
	e.apply(t, `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata:
  name: broken
spec:
  schedule: "* * * * * *"
  sql:
    statements: ["UPDATE counters SET n = n + 1 WHERE name = @nope"]
`)
	await(t, "broken's Ready=False", func() bool {
		c, ok := condition(e.get(t, "broken"), spec.ConditionReady)
		return ok && c.Status == metav1.ConditionFalse && c.Reason == "Refused" && strings.Contains(c.Message, "@nope")
	})
	await(t, "an Event about broken", func() bool {
		evs, err := e.client.Resource(eventsResource).Namespace(e.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, u := range evs.Items {
			var ev corev1.Event
			if fromUnstructured(&u, &ev) == nil && ev.InvolvedObject.Name == "broken" && ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, "@nope") {
				return true
			}
		}
		return false
	})
	if rs := enginetest.Rows(t, e.db, "broken"); len(rs) != 0 {
		t.Fatalf("a refused job ran: %+v", rs)
	}

	// Suspend: no slot starts more than a second after the change.
	e.patch(t, "tick", `{"spec":{"suspend":true}}`)
	suspendedAt := time.Now()
	await(t, "tick's Suspended=True", func() bool {
		sj := e.get(t, "tick")
		c, ok := condition(sj, spec.ConditionSuspended)
		return ok && c.Status == metav1.ConditionTrue && sj.Status.NextScheduleTime == nil && sj.Status.ObservedGeneration == 2
	})
	for _, r := range e.succeeded(t, "tick") {
		if r.Slot.After(suspendedAt.Add(time.Second)) {
			t.Fatalf("slot %s ran after the suspend at %s", r.Slot, suspendedAt)
		}
	}

	// Trigger: one slot now, through the ledger, recorded in the status.
	e.patch(t, "tick", `{"metadata":{"annotations":{"leasecron.io/trigger":"first"}}}`)
	await(t, "the trigger in the status", func() bool {
		st := e.get(t, "tick").Status
		return st.LastTrigger == "first" && st.LastTriggerTime != nil
	})
	triggered := e.get(t, "tick").Status.LastTriggerTime.Time
	await(t, "the triggered slot", func() bool {
		for _, r := range e.succeeded(t, "tick") {
			if r.Slot.Equal(triggered) {
				return true
			}
		}
		return false
	})
	if n, runs := e.counter(t, "tick"), len(e.succeeded(t, "tick")); n != runs {
		t.Fatalf("counter = %d, succeeded slots = %d: a slot ran twice or not at all", n, runs)
	}
	await(t, "the status to match the ledger", func() bool {
		st := e.get(t, "tick").Status
		rs := e.succeeded(t, "tick")
		// The status's times are to the second (metav1.Time).
		return st.LastSuccessfulTime != nil && st.LastSuccessfulTime.Time.Equal(rs[len(rs)-1].Slot.Truncate(time.Second))
	})

	// Delete: the job leaves the scheduler.
	if err := e.res().Delete(context.Background(), "tick", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, "tick to leave the job set", func() bool {
		for _, d := range e.sched.Definitions() {
			if d.Name == "tick" {
				return false
			}
		}
		return true
	})
}

// Status writes of the whole namespace stay within the rate limit: 40
// per-second jobs, whose status would change every second, get at most
// burst + qps × seconds writes.
func TestStatusWritesAreRateLimited(t *testing.T) {
	const qps, burst, n = 5, 5, 40
	e := start(t, func(o *Options) { o.StatusQPS, o.StatusBurst, o.StatusMinInterval = qps, burst, 200*time.Millisecond })
	for i := range n {
		e.apply(t, counterJob(fmt.Sprintf("j%02d", i), "* * * * * *", ""))
	}
	w, err := e.res().Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	e.lead(t)
	start := time.Now()
	writes := 0
	window := 3 * time.Second
	for deadline := time.After(window); ; {
		select {
		case ev := <-w.ResultChan():
			if ev.Type == "MODIFIED" {
				writes++
			}
			continue
		case <-deadline: // the window the test measures
		}
		break
	}
	limit := burst + int(qps*time.Since(start).Seconds()) + 1
	t.Logf("%d status writes in %s for %d per-second jobs (limit %d)", writes, time.Since(start).Round(time.Millisecond), n, limit)
	if writes == 0 {
		t.Fatal("no status written")
	}
	if writes > limit {
		t.Fatalf("%d status writes in %s, above the limit of %d", writes, window, limit)
	}
}

// A per-second job whose every slot fails for good gets a bounded number of
// SlotFailed Events on its ScheduledJob (the first at once, then one per
// EventEvery, each counting the slots since the one before), together
// covering every failed slot, and none carries the secret header the
// receiver echoed in its answer. Suspending it and resuming records the
// missed slots as one SlotsMissed Event.
func TestSlotEventsAreAggregated(t *testing.T) {
	const secret = "event-secret-4b1d"
	const every = 2 * time.Second
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "receiver saw Authorization=%q", r.Header.Get("Authorization"))
	}))
	t.Cleanup(rc.Close)
	m := metrics.New(prometheus.NewRegistry())
	e := start(t, func(o *Options) {
		o.Catalog = spec.NewCatalog(sqljob.Kind{}, httpjob.Kind{})
		o.Env.LookupEnv = func(k string) (string, bool) {
			if k == "EVENT_TEST_TOKEN" {
				return secret, true
			}
			return "", false
		}
		o.EventEvery = every
	}, m)
	e.lead(t)
	started := time.Now()
	e.apply(t, fmt.Sprintf(`apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata:
  name: failing
spec:
  schedule: "* * * * * *"
  timeout: 1s
  retries: {limit: 1}
  http:
    url: %s/fail
    headersFrom: [{name: Authorization, env: EVENT_TEST_TOKEN, prefix: "Bearer "}]
`, rc.URL))
	failed := func() float64 { return testutil.ToFloat64(m.Slots.WithLabelValues("failing", metrics.ResultFailed)) }
	await(t, "6 failed slots", func() bool { return failed() >= 6 })
	await(t, "the Events to cover the failed slots so far", func() bool {
		n := 0
		for _, ev := range e.events(t, "failing", ReasonSlotFailed) {
			n += int(ev.Count)
		}
		return n >= 6
	})
	evs := e.events(t, "failing", ReasonSlotFailed)
	elapsed := time.Since(started)
	limit := 1 + int(elapsed/every) + 1
	t.Logf("%.0f slots failed for good in %s: %d SlotFailed Events (limit %d)", failed(), elapsed.Round(time.Millisecond), len(evs), limit)
	if len(evs) > limit || len(evs) >= int(failed()) {
		t.Fatalf("%d SlotFailed Events for %.0f failed slots in %s: want at most %d (one per %s)", len(evs), failed(), elapsed, limit, every)
	}
	aggregated := false
	for _, ev := range evs {
		if strings.Contains(ev.Message, secret) {
			t.Fatalf("an Event carries the secret: %q", ev.Message)
		}
		if !strings.Contains(ev.Message, "failed for good") || !strings.Contains(ev.Message, "500") {
			t.Errorf("Event message %q does not say the slot failed for good with the receiver's status", ev.Message)
		}
		if ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Kind != spec.KindName {
			t.Errorf("Event %s is %s on a %s, want a Warning on the ScheduledJob", ev.Name, ev.Type, ev.InvolvedObject.Kind)
		}
		aggregated = aggregated || ev.Count > 1
	}
	if !aggregated {
		t.Errorf("no Event counts more than one slot: %+v", evs)
	}

	// Missed slots: suspended for 3 seconds, then resumed.
	e.patch(t, "failing", `{"spec":{"suspend":true}}`)
	await(t, "the job to be suspended", func() bool {
		c, ok := condition(e.get(t, "failing"), spec.ConditionSuspended)
		return ok && c.Status == metav1.ConditionTrue
	})
	time.Sleep(3 * time.Second) // the suspension itself: slots pass meanwhile
	e.patch(t, "failing", `{"spec":{"suspend":false}}`)
	await(t, "a SlotsMissed Event", func() bool { return len(e.events(t, "failing", ReasonSlotsMissed)) == 1 })
	if ev := e.events(t, "failing", ReasonSlotsMissed)[0]; ev.Count < 3 || !strings.Contains(ev.Message, "missed") {
		t.Fatalf("SlotsMissed Event counts %d (%q), want at least the 3 slots passed while suspended", ev.Count, ev.Message)
	}

	// Deleted: the job's series go.
	if err := e.res().Delete(context.Background(), "failing", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, "the deleted job's series to go", func() bool {
		n := 0
		for _, c := range []prometheus.Collector{m.Runs, m.Slots, m.LastSchedule, m.MissedSlots, m.NextSchedule, m.Interval} {
			n += testutil.CollectAndCount(c)
		}
		return n == 0
	})
}

// events lists the Events of one reason on the ScheduledJob name.
func (e *env) events(t *testing.T, name, reason string) []corev1.Event {
	t.Helper()
	list, err := e.client.Resource(eventsResource).Namespace(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for i := range list.Items {
		var ev corev1.Event
		if err := fromUnstructured(&list.Items[i], &ev); err != nil {
			t.Fatal(err)
		}
		if ev.InvolvedObject.Name == name && ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}
