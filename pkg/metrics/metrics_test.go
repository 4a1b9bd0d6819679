package metrics_test

import (
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
