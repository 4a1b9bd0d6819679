package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/metrics"
)

// What the engine reports lands in the series an alert reads: attempts and
// slots counted apart, the last success from the ledger and from each
// success, missed and caught-up slots, and a removed job's series gone.
func TestEngineEventsBecomeSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	last := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	m.JobStarted("a", last)
	if got := testutil.ToFloat64(m.LastSuccess.WithLabelValues("a")); got != float64(last.Unix()) {
		t.Errorf("last success from the ledger = %v, want %d", got, last.Unix())
	}
	m.Attempt("a", jobs.Failed, time.Second)
	m.Attempt("a", jobs.Succeeded, time.Second)
	m.SlotDone("a", jobs.Succeeded, last.Add(time.Hour))
	m.Attempt("a", jobs.Skipped, 0)
	m.SlotDone("a", jobs.Skipped, last)
	m.Missed("a", 3)
	m.CaughtUp("a")
	for _, c := range []struct {
		name string
		got  prometheus.Collector
		want float64
	}{
		{"attempts failed", m.Runs.WithLabelValues("a", metrics.ResultFailed), 1},
		{"attempts succeeded", m.Runs.WithLabelValues("a", metrics.ResultSucceeded), 1},
		{"attempts skipped", m.Runs.WithLabelValues("a", metrics.ResultSkipped), 1},
		{"slots succeeded", m.Slots.WithLabelValues("a", metrics.ResultSucceeded), 1},
		{"slots failed", m.Slots.WithLabelValues("a", metrics.ResultFailed), 0},
		{"missed", m.MissedSlots.WithLabelValues("a"), 3},
		{"caught up", m.CaughtUpSlots.WithLabelValues("a"), 1},
		{"last success", m.LastSuccess.WithLabelValues("a"), float64(last.Add(time.Hour).Unix())},
	} {
		if got := testutil.ToFloat64(c.got); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.Duration); n != 1 {
		t.Errorf("%d duration series, want 1 (skipped attempts are not timed)", n)
	}
	m.Forget("a")
	if n := testutil.CollectAndCount(m.Runs) + testutil.CollectAndCount(m.LastSuccess); n != 0 {
		t.Errorf("%d series left for a removed job", n)
	}
}

// The leader's next slot and interval are series while a job is scheduled
// and go when it has none; a removed job's last running slot, ending after
// Forget, brings none of its series back, but the job scheduled again does.
func TestNextSlotAndForget(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	next := time.Date(2026, 12, 1, 0, 5, 0, 0, time.UTC)
	m.JobStarted("a", time.Time{})
	m.NextSlot("a", next, 5*time.Minute)
	if got := testutil.ToFloat64(m.NextSchedule.WithLabelValues("a")); got != float64(next.Unix()) {
		t.Errorf("next schedule = %v, want %d", got, next.Unix())
	}
	if got := testutil.ToFloat64(m.Interval.WithLabelValues("a")); got != 300 {
		t.Errorf("interval = %v, want 300", got)
	}
	m.NextSlot("a", time.Time{}, 0) // suspended
	if n := testutil.CollectAndCount(m.NextSchedule) + testutil.CollectAndCount(m.Interval); n != 0 {
		t.Errorf("%d next-slot series for a suspended job, want 0", n)
	}

	m.NextSlot("a", next, 5*time.Minute)
	m.Forget("a")
	m.Attempt("a", jobs.Succeeded, time.Second) // the slot that ran when it was removed
	m.SlotDone("a", jobs.Succeeded, next)
	m.Missed("a", 1)
	left := 0
	for _, c := range []prometheus.Collector{m.Runs, m.Slots, m.Duration, m.LastSuccess, m.LastSchedule, m.MissedSlots, m.CaughtUpSlots, m.NextSchedule, m.Interval} {
		left += testutil.CollectAndCount(c)
	}
	if left != 0 {
		t.Errorf("%d series of a removed job after its last slot ended, want 0", left)
	}
	m.NextSlot("a", next.Add(5*time.Minute), 5*time.Minute) // added again
	m.SlotDone("a", jobs.Succeeded, next.Add(5*time.Minute))
	if got := testutil.ToFloat64(m.LastSuccess.WithLabelValues("a")); got != float64(next.Add(5*time.Minute).Unix()) {
		t.Errorf("last success of the job added again = %v, want %d", got, next.Add(5*time.Minute).Unix())
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "leasecron_build_info" {
			continue
		}
		if len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Fatalf("leasecron_build_info = %v, want one series of value 1", f.GetMetric())
		}
		labels := map[string]string{}
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] == "" || labels["commit"] == "" || !strings.HasPrefix(labels["goversion"], "go") {
			t.Fatalf("leasecron_build_info labels = %v, want version, commit and goversion", labels)
		}
		return
	}
	t.Fatal("no leasecron_build_info")
}
