// Package metrics defines leasecron's Prometheus metrics. They are built on a
// Registerer the caller owns (a private registry in the binary, a fresh one
// per test), never registered globally.
//
// Per-job series carry the label JobLabel ("scheduled_job"), never "job":
// "job" is the label Prometheus gives every target, so a series of our own
// with it arrives renamed to "exported_job" and queries on it match nothing.
//
// Two counters count outcomes at two grains: leasecron_job_runs_total counts
// attempts (a slot retried twice and then fixed adds two "failed" and one
// "succeeded"), leasecron_job_slots_total counts slots, once each, by how
// they ended: "failed" there means the slot failed for good (every retry
// failed until its deadline), which is what to alert on.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// JobLabel is the label that names the job on every per-job series.
const JobLabel = "scheduled_job"

// Run results, the values of the result label.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultSkipped   = "skipped" // the ledger already had the slot done
)

// Metrics are the controller's metrics.
type Metrics struct {
	Leader      prometheus.Gauge
	Transitions prometheus.Counter
	// Runs counts attempts by job and result.
	Runs *prometheus.CounterVec
	// Slots counts slots by job and final result: each slot once.
	Slots       *prometheus.CounterVec
	Duration    *prometheus.HistogramVec
	LastSuccess *prometheus.GaugeVec
	Missed      *prometheus.CounterVec
	CaughtUp    *prometheus.CounterVec
}

// New creates the metrics and registers them, with the Go and process
// collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leasecron_leader", Help: "1 while this process leads, else 0.",
		}),
		Transitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasecron_leader_transitions_total", Help: "Times this process became leader.",
		}),
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasecron_job_runs_total", Help: "Attempts to run a slot, by job and result (succeeded, failed, skipped); a retried slot counts once per attempt.",
		}, []string{JobLabel, "result"}),
		Slots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasecron_job_slots_total", Help: "Slots by job and how they ended, each slot once: succeeded, skipped (already done), or failed (for good: every attempt failed until the deadline).",
		}, []string{JobLabel, "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "leasecron_job_duration_seconds", Help: "Duration of one attempt of a slot, by job.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{JobLabel}),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leasecron_job_last_success_timestamp_seconds", Help: "Unix time of the last slot that succeeded, by job; read from the ledger when leadership starts.",
		}, []string{JobLabel}),
		Missed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasecron_missed_slots_total", Help: "Slots not run because they fell outside the catch-up window or limit.",
		}, []string{JobLabel}),
		CaughtUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasecron_caught_up_slots_total", Help: "Past slots run late when leadership started.",
		}, []string{JobLabel}),
	}
	reg.MustRegister(m.Leader, m.Transitions, m.Runs, m.Slots, m.Duration, m.LastSuccess, m.Missed, m.CaughtUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// InitJob creates job's counter series at zero, so that they exist (and
// rate() and increase() see their first change) before anything happens.
func (m *Metrics) InitJob(job string) {
	for _, r := range []string{ResultSucceeded, ResultFailed, ResultSkipped} {
		m.Runs.WithLabelValues(job, r)
		m.Slots.WithLabelValues(job, r)
	}
	m.Missed.WithLabelValues(job)
	m.CaughtUp.WithLabelValues(job)
}
