package alerts

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/leasecron/leasecron/internal/testenv"
)

// Time in the recordings is dilated: one real second between scrapes is one
// step of promtool's interval, so a per-second job reads as a per-minute one
// and an alert's `for: 5m` holds after five real seconds. Every value that is
// a time (a *_timestamp_seconds gauge) or a span of time (the schedule's
// interval) is mapped with the same factor, relative to the scrape it came
// from: what the rules compare (a sample's value against its scrape's time,
// against the interval) keeps its proportions exactly.
const (
	realStep = time.Second
	step     = time.Minute
	dilation = float64(step / realStep)
)

// targetLabels are what Prometheus adds to every series of a target that a
// ServiceMonitor scrapes (instance and pod are the process's name).
var targetLabels = map[string]string{"job": "leasecron", "namespace": "leasecron"}

// recorder scrapes the /metrics of a changing set of processes once per
// realStep, as Prometheus would scrape the chart's replicas, and keeps each
// round as one step of promtool input series.
type recorder struct {
	t       *testing.T
	mu      sync.Mutex
	targets map[string]string // process name -> host:port
	steps   []map[string]float64
	// families are the names of every metric family scraped.
	families map[string]bool
	begin    sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{t: t, targets: map[string]string{}, families: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(r.finish)
	return r
}

// add and remove change the processes scraped from the next round on; the
// first add starts the rounds (so that the recording does not begin with
// no replica at all).
func (r *recorder) add(name, addr string) {
	r.mu.Lock()
	r.targets[name] = addr
	r.mu.Unlock()
	r.begin.Do(func() { go r.run() })
}

func (r *recorder) remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, name)
}

// now is the number of rounds recorded so far: the step the next round is.
func (r *recorder) now() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.steps)
}

// await waits until n more rounds are recorded and returns the step count.
func (r *recorder) await(n int) int {
	r.t.Helper()
	want := r.now() + n
	deadline := time.Now().Add(time.Duration(n)*realStep + 30*time.Second)
	for r.now() < want {
		if time.Now().After(deadline) {
			r.t.Fatalf("the recorder did not record %d rounds", n)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	return r.now()
}

// finish stops the scraping and waits for the last round.
func (r *recorder) finish() {
	r.begin.Do(func() { close(r.done) }) // never started
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

func (r *recorder) run() {
	defer close(r.done)
	tick := time.NewTicker(realStep)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		r.round()
	}
}

// round scrapes every target once. A target that does not answer within
// half a step (a stopped process) has no samples in it: Prometheus marks its
// series stale, and so does inputSeries.
func (r *recorder) round() {
	r.mu.Lock()
	targets := maps.Clone(r.targets)
	i := len(r.steps)
	r.mu.Unlock()
	samples := map[string]float64{}
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(targets)) {
		ctx, cancel := context.WithTimeout(context.Background(), realStep/2)
		at := time.Now()
		fams, err := testenv.ScrapeMetrics(ctx, "http://"+targets[name]+"/metrics")
		cancel()
		if err != nil {
			continue
		}
		for _, f := range fams {
			seen[f.GetName()] = true
			if !strings.HasPrefix(f.GetName(), "leasecron_") {
				continue
			}
			for _, m := range f.GetMetric() {
				v, ok := value(f.GetType(), m)
				if !ok {
					continue // histograms: no rule reads them
				}
				samples[seriesKey(f.GetName(), name, m)] = mapTime(f.GetName(), v, i, at)
			}
		}
	}
	r.mu.Lock()
	r.steps = append(r.steps, samples)
	maps.Copy(r.families, seen)
	r.mu.Unlock()
}

func value(typ dto.MetricType, m *dto.Metric) (float64, bool) {
	switch typ {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), true
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), true
	}
	return 0, false
}

// mapTime maps a sample of metric scraped at at, in round i, to promtool's
// dilated time.
func mapTime(metric string, v float64, i int, at time.Time) float64 {
	switch {
	case strings.HasSuffix(metric, "_timestamp_seconds"):
		real := v - float64(at.UnixNano())/1e9 // seconds from the scrape to the time v
		return float64(i)*step.Seconds() + real*dilation
	case metric == "leasecron_job_schedule_interval_seconds":
		return v * dilation
	}
	return v
}

// seriesKey is the series in promtool's notation, with the target's labels.
func seriesKey(metric, target string, m *dto.Metric) string {
	labels := maps.Clone(targetLabels)
	labels["instance"], labels["pod"] = target, target
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	return metric + labelString(labels)
}

func labelString(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, labels[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// inputSeries is the recording as promtool input_series: each series's
// values by step, "stale" in the round a series disappeared (as Prometheus
// marks a series that a scrape no longer has, or whose target failed), "_"
// while it is absent.
func (r *recorder) inputSeries() []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := map[string]bool{}
	for _, s := range r.steps {
		for k := range s {
			keys[k] = true
		}
	}
	var out []map[string]string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		vals := make([]string, len(r.steps))
		for i, s := range r.steps {
			v, ok := s[k]
			switch {
			case ok:
				vals[i] = strconv.FormatFloat(v, 'f', -1, 64)
			case i > 0 && vals[i-1] != "_" && vals[i-1] != "stale":
				vals[i] = "stale"
			default:
				vals[i] = "_"
			}
		}
		out = append(out, map[string]string{"series": k, "values": strings.Join(vals, " ")})
	}
	return out
}

// minutes is step i as promtool's eval_time.
func minutes(i int) string { return fmt.Sprintf("%dm", i) }
