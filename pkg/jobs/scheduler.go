// Package jobs runs scheduled jobs exactly once per slot while this process
// leads.
//
// A slot is one activation time of a job's cron schedule. For each slot the
// scheduler claims a row in the job_runs ledger (unique on job and slot), runs
// the job with the slot's time, and marks the row succeeded in the same
// transaction as the job's own writes. Every ledger transaction checks, under
// a shared lock on the term row held to its commit, that the leadership term
// (the fence) issued when this process started leading is still the
// database's current one, so a leader that lost its lease without noticing
// (frozen, partitioned) cannot commit a slot; claims are short, and a job's
// transaction checks only after its work, so jobs run side by side and only
// a new term waits for them (see Ledger). The job's own unique keys are the
// third guard.
//
// When leadership starts, each job catches up: the slots after its last
// succeeded slot are run oldest first, at most CatchUpWindow back and at most
// CatchUpLimit of the most recent; older ones are reported as missed. A job
// with no history runs only its most recent slot. A failed slot is retried
// with capped exponential backoff until it succeeds or its deadline passes
// (the next slot, but at least JobTimeout after the first attempt). A job
// never overlaps itself: each job has one loop that runs its slots in order.
//
// The scheduler uses robfig/cron's parser and schedules, but not its runner:
// the runner stamps work with time.Now, drops slots that pass while a job runs
// or while the process is down, and knows nothing of leadership.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"
	"k8s.io/utils/clock"

	"github.com/leasecron/leasecron/internal/metrics"
	"github.com/leasecron/leasecron/pkg/model"
)

// DefaultCatchUpLimit is the catch-up limit the controller uses unless told otherwise.
const DefaultCatchUpLimit = 100

// Options configure a Scheduler. Zero values mean the documented default,
// except CatchUpLimit, whose zero disables catch-up.
type Options struct {
	// Jobs are the jobs to run; each runs on Schedules[name].
	Jobs Registry
	// Schedules maps every job in Jobs to its schedule.
	Schedules map[string]*Schedule
	// CatchUpWindow is how far back a new leader runs missed slots. Default 48h.
	CatchUpWindow time.Duration
	// CatchUpLimit is how many missed slots per job a new leader runs at most
	// (DefaultCatchUpLimit is the controller's default); zero disables
	// catch-up, and a negative value means DefaultCatchUpLimit.
	CatchUpLimit int
	// JobTimeout bounds one attempt of a slot. Default 10m.
	JobTimeout time.Duration
	// ShutdownGrace is how long running slots may finish after shutdown
	// begins. Default 30s.
	ShutdownGrace time.Duration
	// RetryBase and RetryMax shape the backoff between attempts. Defaults 1s and 1m.
	RetryBase, RetryMax time.Duration
	// Clock is the scheduler's clock, replaceable to allow for less flaky
	// testing. Default the real clock.
	Clock clock.Clock
	// Log receives one line per slot outcome. Default slog.Default().
	Log *slog.Logger
	// Metrics, if set, are updated as slots run.
	Metrics *metrics.Metrics
}

func (o *Options) defaults() {
	if o.CatchUpWindow <= 0 {
		o.CatchUpWindow = 48 * time.Hour
	}
	if o.CatchUpLimit < 0 {
		o.CatchUpLimit = DefaultCatchUpLimit
	}
	if o.JobTimeout <= 0 {
		o.JobTimeout = 10 * time.Minute
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 30 * time.Second
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = time.Minute
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Scheduler runs jobs through the ledger.
type Scheduler struct {
	opts   Options
	ledger *Ledger
}

// New returns a scheduler that writes to db as holder.
func New(db *gorm.DB, holder string, opts Options) (*Scheduler, error) {
	opts.defaults()
	for name := range opts.Jobs {
		if opts.Schedules[name] == nil {
			return nil, fmt.Errorf("job %s has no schedule", name)
		}
	}
	for name := range opts.Schedules {
		if opts.Jobs[name] == nil {
			return nil, fmt.Errorf("schedule for unknown job %q", name)
		}
	}
	l := NewLedger(db, holder)
	l.now = opts.Clock.Now
	return &Scheduler{opts: opts, ledger: l}, nil
}

// Ledger returns the scheduler's ledger.
func (s *Scheduler) Ledger() *Ledger { return s.ledger }

// Outcome is what became of one slot.
type Outcome int

// Outcomes of RunSlot.
const (
	Succeeded Outcome = iota // the job ran and committed
	Skipped                  // the ledger already had the slot succeeded
	Failed                   // every attempt failed until the deadline
)

func (o Outcome) String() string {
	return [...]string{"succeeded", "skipped", "failed"}[o]
}

// Lead runs every job under fence until ctx ends (leadership lost: running
// slots are cancelled at once and roll back) or drain closes (shutdown: no
// new slot starts, running ones get ShutdownGrace to finish). It returns
// ErrFenced when the database shows a newer term; an error when a job cannot
// start (its ledger cannot be read for a reason that retrying does not
// mend: transient database errors are retried with backoff); ctx's cause if
// ctx was cancelled with one other than context.Canceled; and nil otherwise.
func (s *Scheduler) Lead(ctx context.Context, drain <-chan struct{}, fence Fence) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() {
		select {
		case <-ctx.Done():
			cancelWork()
		case <-drain:
			t := s.opts.Clock.NewTimer(s.opts.ShutdownGrace)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C():
				s.opts.Log.Warn("shutdown grace period over, cancelling running slots", "grace", s.opts.ShutdownGrace)
			case <-work.Done():
			}
			cancelWork()
		case <-work.Done():
		}
	}()

	started := s.opts.Clock.Now()
	var wg sync.WaitGroup
	for _, name := range s.opts.Jobs.Names() {
		wg.Go(func() {
			if err := s.loop(ctx, work, drain, fence, name, started); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	// Leadership lost (ctx cancelled from outside) and shutdown are not
	// errors; a newer term, a database error at start and any other cause a
	// loop or the caller gave are.
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// loop runs one job's slots in order, one at a time.
func (s *Scheduler) loop(ctx, work context.Context, drain <-chan struct{}, fence Fence, name string, started time.Time) error {
	job, sched := s.opts.Jobs[name], s.opts.Schedules[name]
	log := s.opts.Log.With("job", name)
	cursor, ok, err := s.startRetrying(ctx, drain, name, sched, log)
	if err != nil || !ok {
		return err
	}
	for {
		now := s.opts.Clock.Now()
		var missed int
		cursor, missed = s.plan(sched, cursor, now)
		if missed > 0 {
			log.Warn("slots missed: older than the catch-up window or beyond the catch-up limit",
				"missed", missed, "window", s.opts.CatchUpWindow, "limit", s.opts.CatchUpLimit, "resume_after", cursor.Add(time.Nanosecond))
			if m := s.opts.Metrics; m != nil {
				m.Missed.WithLabelValues(name).Add(float64(missed))
			}
		}
		next := sched.Next(cursor)
		if next.IsZero() {
			log.Warn("schedule has no further slot")
			select {
			case <-ctx.Done():
			case <-drain:
			}
			return nil
		}
		if d := next.Sub(now); d > 0 {
			t := s.opts.Clock.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-drain:
				t.Stop()
				return nil
			case <-t.C():
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-drain:
			return nil
		default:
		}
		deadline := sched.Next(next)
		if floor := s.opts.Clock.Now().Add(s.opts.JobTimeout); deadline.Before(floor) {
			deadline = floor
		}
		outcome, err := s.runSlot(work, drain, fence, job, next, deadline)
		if err != nil {
			if errors.Is(err, ErrFenced) {
				log.Error("leadership term moved on: stopping", "err", err)
				return err
			}
			if ctx.Err() != nil || work.Err() != nil {
				log.Warn("slot interrupted", "slot", next, "err", err)
				return nil
			}
			log.Warn("slot not run here", "slot", next, "err", err)
		}
		if outcome == Succeeded && next.Before(started) {
			if m := s.opts.Metrics; m != nil {
				m.CaughtUp.WithLabelValues(name).Inc()
			}
		}
		cursor = next
	}
}

// startRetrying is start, retried with capped backoff while the database
// fails in a way that mends itself, until ctx ends or drain closes (then it
// reports !ok). Any other failure is returned.
func (s *Scheduler) startRetrying(ctx context.Context, drain <-chan struct{}, name string, sched *Schedule, log *slog.Logger) (cursor time.Time, ok bool, err error) {
	backoff := s.opts.RetryBase
	for {
		cursor, err := s.start(ctx, name, sched)
		switch {
		case ctx.Err() != nil:
			return time.Time{}, false, nil
		case err == nil:
			return cursor, true, nil
		case !model.Transient(err):
			return time.Time{}, false, fmt.Errorf("job %s cannot start: %w", name, err)
		}
		log.Warn("cannot read the job's ledger, retrying", "retry_in", backoff, "err", err)
		t := s.opts.Clock.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, false, nil
		case <-drain:
			t.Stop()
			return time.Time{}, false, nil
		case <-t.C():
		}
		backoff = min(2*backoff, s.opts.RetryMax)
	}
}

// start returns the cursor a new leader starts from for job: its last
// succeeded slot; for a job with no history, just before its most recent slot.
func (s *Scheduler) start(ctx context.Context, name string, sched *Schedule) (time.Time, error) {
	now := s.opts.Clock.Now()
	last, history, err := s.ledger.LastSucceeded(ctx, name)
	if err != nil {
		return time.Time{}, err
	}
	if m := s.opts.Metrics; m != nil {
		m.InitJob(name)
		if !last.IsZero() { // the last success may be another leader's: the ledger knows
			m.LastSuccess.WithLabelValues(name).Set(float64(last.Unix()))
		}
	}
	switch {
	case !history:
		prev := sched.Prev(now)
		if prev.IsZero() || prev.Before(now.Add(-s.opts.CatchUpWindow)) {
			return now, nil
		}
		return prev.Add(-time.Nanosecond), nil
	case last.IsZero(): // history, but nothing ever succeeded
		return now.Add(-s.opts.CatchUpWindow).Add(-time.Nanosecond), nil
	default:
		return last, nil
	}
}

// maxMissedCount bounds how many missed slots plan counts one by one.
const maxMissedCount = 100_000

// plan moves cursor forward past the slots that fall outside the catch-up
// window or beyond the catch-up limit, and reports how many it skipped.
func (s *Scheduler) plan(sched *Schedule, cursor, now time.Time) (time.Time, int) {
	missed := 0
	windowStart := now.Add(-s.opts.CatchUpWindow)
	if cursor.Before(windowStart) {
		for t := sched.Next(cursor); !t.IsZero() && t.Before(windowStart) && missed < maxMissedCount; t = sched.Next(t) {
			missed++
		}
		cursor = windowStart.Add(-time.Nanosecond)
	}
	limit := s.opts.CatchUpLimit
	ring := make([]time.Time, 0, min(limit, 64))
	pending := 0
	for t := sched.Next(cursor); !t.IsZero() && !t.After(now); t = sched.Next(t) {
		if limit == 0 {
			pending++
			cursor = t
			continue
		}
		if len(ring) < limit {
			ring = append(ring, t)
		} else {
			ring[pending%limit] = t
		}
		pending++
	}
	if limit > 0 && pending > limit {
		oldest := ring[pending%limit]
		cursor = oldest.Add(-time.Nanosecond)
	}
	if pending > limit {
		missed += pending - limit
	}
	return cursor, missed
}

// RunSlot runs job's slot through the ledger under fence, retrying failed
// attempts with backoff until deadline. It is what `once` and `backfill` use.
func (s *Scheduler) RunSlot(ctx context.Context, fence Fence, name string, slot, deadline time.Time) (Outcome, error) {
	job := s.opts.Jobs[name]
	if job == nil {
		return Failed, fmt.Errorf("unknown job %q", name)
	}
	return s.runSlot(ctx, nil, fence, job, slot, deadline)
}

func (s *Scheduler) runSlot(ctx context.Context, drain <-chan struct{}, fence Fence, job Job, slot, deadline time.Time) (Outcome, error) {
	name := job.Name()
	log := s.opts.Log.With("job", name, "slot", slot.In(s.opts.Schedules[name].Location()).Format(time.RFC3339))
	backoff := s.opts.RetryBase
	for attempt := 1; ; attempt++ {
		start := s.opts.Clock.Now()
		outcome, err := s.attempt(ctx, fence, job, slot)
		elapsed := s.opts.Clock.Since(start)
		m := s.opts.Metrics
		switch {
		case err == nil && outcome == Skipped:
			log.Debug("slot already done")
			if m != nil {
				m.Runs.WithLabelValues(name, metrics.ResultSkipped).Inc()
				m.Slots.WithLabelValues(name, metrics.ResultSkipped).Inc()
			}
			return Skipped, nil
		case err == nil:
			log.Info("slot succeeded", "attempt", attempt, "duration", elapsed)
			if m != nil {
				m.Runs.WithLabelValues(name, metrics.ResultSucceeded).Inc()
				m.Slots.WithLabelValues(name, metrics.ResultSucceeded).Inc()
				m.Duration.WithLabelValues(name).Observe(elapsed.Seconds())
				m.LastSuccess.WithLabelValues(name).Set(float64(slot.Unix()))
			}
			return Succeeded, nil
		}
		if m != nil {
			m.Runs.WithLabelValues(name, metrics.ResultFailed).Inc()
			m.Duration.WithLabelValues(name).Observe(elapsed.Seconds())
		}
		if errors.Is(err, ErrFenced) || errors.Is(err, ErrSlotBusy) || ctx.Err() != nil {
			return Failed, err
		}
		if s.opts.Clock.Now().Add(backoff).After(deadline) {
			log.Error("slot failed, giving up: deadline reached", "attempts", attempt, "deadline", deadline, "err", err)
			if m != nil {
				m.Slots.WithLabelValues(name, metrics.ResultFailed).Inc()
			}
			return Failed, nil
		}
		log.Warn("slot attempt failed, retrying", "attempt", attempt, "retry_in", backoff, "err", err)
		t := s.opts.Clock.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return Failed, ctx.Err()
		case <-drain:
			t.Stop()
			return Failed, errors.New("shutting down: slot left for the next leader")
		case <-t.C():
		}
		backoff = min(2*backoff, s.opts.RetryMax)
	}
}

// attempt claims the slot and runs the job once.
func (s *Scheduler) attempt(ctx context.Context, fence Fence, job Job, slot time.Time) (outcome Outcome, err error) {
	name := job.Name()
	ctx, cancel := context.WithTimeout(ctx, s.opts.JobTimeout)
	defer cancel()
	done, err := s.ledger.Claim(ctx, fence, name, slot)
	if err != nil {
		return Failed, err
	}
	if done {
		return Skipped, nil
	}
	err = s.ledger.Complete(ctx, fence, name, slot, func(tx *gorm.DB) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("job panicked: %v", r)
			}
		}()
		return job.Run(ctx, tx, slot)
	})
	if err == nil {
		return Succeeded, nil
	}
	if !errors.Is(err, ErrFenced) && !errors.Is(err, ErrSlotBusy) {
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer fcancel()
		if ferr := s.ledger.Fail(fctx, fence, name, slot, err); ferr != nil {
			s.opts.Log.Warn("could not record the failure in the ledger", "job", name, "err", ferr)
		}
	}
	return Failed, err
}

// BatchSize is how many slots RunSlots puts in one transaction.
const BatchSize = 200

// RunSlots runs job's slots, oldest first, through the ledger under fence,
// as backfill does, and counts the outcomes. A job that implements BatchJob
// runs up to BatchSize new slots per transaction; a batch that fails, or that
// meets a slot running elsewhere or failed before, is run slot by slot with
// RunSlot's retries instead. It stops early only when ctx ends.
func (s *Scheduler) RunSlots(ctx context.Context, fence Fence, name string, slots []time.Time, deadline time.Time) (map[Outcome]int, error) {
	job := s.opts.Jobs[name]
	if job == nil {
		return nil, fmt.Errorf("unknown job %q", name)
	}
	counts := map[Outcome]int{}
	batch, _ := job.(BatchJob)
	for len(slots) > 0 && ctx.Err() == nil {
		chunk := slots[:min(BatchSize, len(slots))]
		slots = slots[len(chunk):]
		if batch != nil {
			start := s.opts.Clock.Now()
			done, err := s.ledger.CompleteBatch(ctx, fence, name, chunk, func(tx *gorm.DB, todo []time.Time) error {
				return batch.RunBatch(ctx, tx, todo)
			})
			if err == nil {
				ran := len(chunk) - len(done)
				counts[Succeeded] += ran
				counts[Skipped] += len(done)
				s.opts.Log.Info("slots succeeded", "job", name, "slots", ran, "skipped", len(done), "duration", s.opts.Clock.Since(start))
				if m := s.opts.Metrics; m != nil {
					m.Runs.WithLabelValues(name, metrics.ResultSucceeded).Add(float64(ran))
					m.Runs.WithLabelValues(name, metrics.ResultSkipped).Add(float64(len(done)))
					m.Slots.WithLabelValues(name, metrics.ResultSucceeded).Add(float64(ran))
					m.Slots.WithLabelValues(name, metrics.ResultSkipped).Add(float64(len(done)))
				}
				continue
			}
			if errors.Is(err, ErrFenced) || ctx.Err() != nil {
				return counts, err
			}
			s.opts.Log.Debug("running the batch slot by slot", "job", name, "reason", err)
		}
		for _, slot := range chunk {
			out, err := s.runSlot(ctx, nil, fence, job, slot, deadline)
			counts[out]++
			if err != nil {
				if errors.Is(err, ErrFenced) || ctx.Err() != nil {
					return counts, err
				}
				s.opts.Log.Warn("slot not run", "job", name, "slot", slot, "err", err)
			}
		}
	}
	return counts, ctx.Err()
}
