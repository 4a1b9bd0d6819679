package cluster

import (
	"sync"
	"time"

	"github.com/leasecron/leasecron/pkg/jobs"
)

// tracker is the jobs.Metrics the scheduler reports to: it remembers, per
// job, the latest slot started, succeeded and failed for good, and passes
// every call on to next.
type tracker struct {
	next jobs.Metrics
	mu   sync.Mutex
	jobs map[string]seen
}

// seen is what the leader saw of one job's slots (zero: nothing).
type seen struct {
	started, succeeded, failed time.Time
}

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

func (t *tracker) forget(job string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.jobs, job)
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
		}
	})
	if t.next != nil {
		t.next.SlotDone(job, o, slot)
	}
}

// Missed implements jobs.Metrics.
func (t *tracker) Missed(job string, n int) {
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
