// Package metrics is leasecron's Prometheus metrics: the controller's own
// and, through Metrics' methods, the engine's jobs.Metrics. They are built on a
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
//
// Alerts must not need each job's schedule, so the leader publishes, for
// every job it schedules, the next slot it waits for
// (leasecron_job_next_schedule_timestamp_seconds: a slot is overdue when
// that time has passed) and the schedule's spacing before that slot
// (leasecron_job_schedule_interval_seconds: the last success is too old when
// it is more than a few intervals back). Both exist only on the leader and
// only while a job is scheduled (not suspended), so a former leader's stale
// values and a suspended job never alert.
//
// A removed job's series go (Forget); a slot of it that was still running
// when it was removed does not bring them back, only its next scheduled
// slot (the job added again) or a new leadership does.
package metrics

import (
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/leasecron/leasecron/internal/version"
	"github.com/leasecron/leasecron/pkg/jobs"
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
	Slots         *prometheus.CounterVec
	Duration      *prometheus.HistogramVec
	LastSuccess   *prometheus.GaugeVec
	LastSchedule  *prometheus.GaugeVec
	MissedSlots   *prometheus.CounterVec
	CaughtUpSlots *prometheus.CounterVec
	// JobsLoaded is how many jobs the controller runs; JobsFileErrors is 1
	// while the jobs file's last edit could not be loaded (the last good
	// set keeps running), else 0.
	JobsLoaded     prometheus.Gauge
	JobsFileErrors prometheus.Gauge
	// NextSchedule and Interval are the leader's next slot of each
	// scheduled job and the schedule's interval before it.
	NextSchedule *prometheus.GaugeVec
	Interval     *prometheus.GaugeVec
	// BuildInfo is 1, labelled with the binary's version, commit and Go
	// version.
	BuildInfo *prometheus.GaugeVec

	// mu orders Forget against the updates: an update holds it for reading
	// and skips a job in gone (removed, and not scheduled since).
	mu   sync.RWMutex
	gone map[string]bool
}

var _ jobs.Metrics = (*Metrics)(nil)

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
		LastSchedule: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leasecron_job_last_schedule_timestamp_seconds", Help: "Unix time of the last slot this process started, by job.",
		}, []string{"scheduled_job"}),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leasecron_job_last_success_timestamp_seconds", Help: "Unix time of the last slot that succeeded, by job; read from the ledger when leadership starts.",
		}, []string{JobLabel}),
		MissedSlots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasecron_missed_slots_total", Help: "Slots not run because they fell outside the catch-up window or limit, or passed while the job was suspended.",
		}, []string{JobLabel}),
		CaughtUpSlots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasecron_caught_up_slots_total", Help: "Past slots run late when leadership started.",
		}, []string{JobLabel}),
		JobsLoaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leasecron_jobs", Help: "Jobs loaded: the set the leader runs.",
		}),
		JobsFileErrors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leasecron_jobs_file_invalid", Help: "1 while the jobs file's current content cannot be loaded (the last good set keeps running), else 0.",
		}),
		NextSchedule: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leasecron_job_next_schedule_timestamp_seconds", Help: "Unix time of the next slot the leader waits for (the one after the running slot while one runs), by job; only on the leader, and not for a suspended job.",
		}, []string{JobLabel}),
		Interval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leasecron_job_schedule_interval_seconds", Help: "Seconds between the next slot and the schedule's slot before it, by job; present with leasecron_job_next_schedule_timestamp_seconds.",
		}, []string{JobLabel}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leasecron_build_info", Help: "1, labelled with the build's version, commit and Go version.",
		}, []string{"version", "commit", "goversion"}),
		gone: map[string]bool{},
	}
	m.BuildInfo.WithLabelValues(version.Version, version.Commit, runtime.Version()).Set(1)
	reg.MustRegister(m.Leader, m.Transitions, m.Runs, m.Slots, m.Duration, m.LastSuccess, m.LastSchedule, m.MissedSlots, m.CaughtUpSlots, m.JobsLoaded, m.JobsFileErrors,
		m.NextSchedule, m.Interval, m.BuildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// live reports whether job's series may be updated: true but for a job
// removed (Forget) and not scheduled since. It takes mu for reading; call
// the returned func when done.
func (m *Metrics) live(job string) (bool, func()) {
	m.mu.RLock()
	return !m.gone[job], m.mu.RUnlock
}

// JobStarted implements jobs.Metrics. It creates the job's counter series
// at zero, so that they exist (and rate() and increase() see their first
// change) before anything happens, and sets its last success from the
// ledger.
func (m *Metrics) JobStarted(job string, last time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.gone, job) // leadership started with the job in the set
	for _, r := range []string{ResultSucceeded, ResultFailed, ResultSkipped} {
		m.Runs.WithLabelValues(job, r)
		m.Slots.WithLabelValues(job, r)
	}
	m.MissedSlots.WithLabelValues(job)
	m.CaughtUpSlots.WithLabelValues(job)
	if !last.IsZero() {
		m.LastSuccess.WithLabelValues(job).Set(float64(last.Unix()))
	}
}

// SlotStarted implements jobs.Metrics.
func (m *Metrics) SlotStarted(job string, slot time.Time) {
	ok, done := m.live(job)
	defer done()
	if !ok {
		return
	}
	m.LastSchedule.WithLabelValues(job).Set(float64(slot.Unix()))
}

// Attempt implements jobs.Metrics.
func (m *Metrics) Attempt(job string, o jobs.Outcome, took time.Duration) {
	ok, done := m.live(job)
	defer done()
	if !ok {
		return
	}
	m.Runs.WithLabelValues(job, o.String()).Inc()
	if o != jobs.Skipped {
		m.Duration.WithLabelValues(job).Observe(took.Seconds())
	}
}

// SlotDone implements jobs.Metrics.
func (m *Metrics) SlotDone(job string, o jobs.Outcome, slot time.Time) {
	ok, done := m.live(job)
	defer done()
	if !ok {
		return
	}
	m.Slots.WithLabelValues(job, o.String()).Inc()
	if o == jobs.Succeeded {
		m.LastSuccess.WithLabelValues(job).Set(float64(slot.Unix()))
	}
}

// Missed implements jobs.Metrics.
func (m *Metrics) Missed(job string, n int) {
	ok, done := m.live(job)
	defer done()
	if ok {
		m.MissedSlots.WithLabelValues(job).Add(float64(n))
	}
}

// CaughtUp implements jobs.Metrics.
func (m *Metrics) CaughtUp(job string) {
	ok, done := m.live(job)
	defer done()
	if ok {
		m.CaughtUpSlots.WithLabelValues(job).Inc()
	}
}

// NextSlot implements jobs.Metrics. A next slot means the job is scheduled:
// it undoes an earlier Forget (the job was added again).
func (m *Metrics) NextSlot(job string, next time.Time, interval time.Duration) {
	if next.IsZero() {
		m.mu.RLock()
		defer m.mu.RUnlock()
		m.NextSchedule.DeleteLabelValues(job)
		m.Interval.DeleteLabelValues(job)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.gone, job)
	m.NextSchedule.WithLabelValues(job).Set(float64(next.Unix()))
	if interval > 0 {
		m.Interval.WithLabelValues(job).Set(interval.Seconds())
	} else {
		m.Interval.DeleteLabelValues(job)
	}
}

// Forget deletes a removed job's series; until the job is scheduled again,
// what its last running slot reports is dropped.
func (m *Metrics) Forget(job string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gone[job] = true
	for _, v := range []*prometheus.MetricVec{m.Runs.MetricVec, m.Slots.MetricVec, m.Duration.MetricVec, m.LastSuccess.MetricVec, m.LastSchedule.MetricVec, m.MissedSlots.MetricVec, m.CaughtUpSlots.MetricVec, m.NextSchedule.MetricVec, m.Interval.MetricVec} {
		v.DeletePartialMatch(prometheus.Labels{JobLabel: job})
	}
}

// OnLead sets the leader gauge and counts a transition when leading starts:
// pass it as jobs.RunOptions.OnLead.
func (m *Metrics) OnLead(leading bool) {
	if leading {
		m.Leader.Set(1)
		m.Transitions.Inc()
		return
	}
	m.Leader.Set(0)
}
