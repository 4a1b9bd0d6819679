package cluster

import (
	"sync"
	"time"

	"github.com/leasecron/leasecron/pkg/jobs"
)

// tracker is the jobs.Metrics the scheduler reports to: it remembers, per
// job, the latest slot started, succeeded and failed for good, and how many
// slots failed for good and were missed (for the Events), and passes every
// call on to next.
type tracker struct {
	next jobs.Metrics
	mu   sync.Mutex
	jobs map[string]seen
}

// seen is what the leader saw of one job's slots (zero: nothing).
type seen struct {
	started, succeeded, failed time.Time
	// failures and missed count the slots that failed for good and the
	// slots missed, since this process first saw the job.
	failures, missed int
}

// forgetter is what next may also do: drop a removed job's series
// (metrics.Metrics.Forget).
type forgetter interface{ Forget(job string) }

func newTracker() *tracker { return &tracker{jobs: map[string]seen{}} }

func (t *tracker) get(job string) seen {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.jobs[job]
}

func (t *tracker) update(job string, f func(*seen)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.jobs[job]
	f(&s)
	t.jobs[job] = s
}

// forget drops a removed job, here and in next.
func (t *tracker) forget(job string) {
	t.mu.Lock()
	delete(t.jobs, job)
	t.mu.Unlock()
	if f, ok := t.next.(forgetter); ok {
		f.Forget(job)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// JobStarted implements jobs.Metrics: last is the ledger's last success.
func (t *tracker) JobStarted(job string, last time.Time) {
	t.update(job, func(s *seen) { s.succeeded = later(s.succeeded, last) })
	if t.next != nil {
		t.next.JobStarted(job, last)
	}
}

// SlotStarted implements jobs.Metrics.
func (t *tracker) SlotStarted(job string, slot time.Time) {
	t.update(job, func(s *seen) { s.started = later(s.started, slot) })
	if t.next != nil {
		t.next.SlotStarted(job, slot)
	}
}

// Attempt implements jobs.Metrics.
func (t *tracker) Attempt(job string, o jobs.Outcome, took time.Duration) {
	if t.next != nil {
		t.next.Attempt(job, o, took)
	}
}

// SlotDone implements jobs.Metrics.
func (t *tracker) SlotDone(job string, o jobs.Outcome, slot time.Time) {
	t.update(job, func(s *seen) {
		switch o {
		case jobs.Succeeded, jobs.Skipped:
			s.succeeded = later(s.succeeded, slot)
		case jobs.Failed:
			s.failed = later(s.failed, slot)
			s.failures++
		}
	})
	if t.next != nil {
		t.next.SlotDone(job, o, slot)
	}
}

// Missed implements jobs.Metrics.
func (t *tracker) Missed(job string, n int) {
	t.update(job, func(s *seen) { s.missed += n })
	if t.next != nil {
		t.next.Missed(job, n)
	}
}

// CaughtUp implements jobs.Metrics.
func (t *tracker) CaughtUp(job string) {
	if t.next != nil {
		t.next.CaughtUp(job)
	}
}

// NextSlot implements jobs.Metrics.
func (t *tracker) NextSlot(job string, next time.Time, interval time.Duration) {
	if t.next != nil {
		t.next.NextSlot(job, next, interval)
	}
}
