// Package jobs is leasecron's engine: it runs any number of scheduled jobs
// exactly once per slot while this process leads.
//
// A slot is one activation time of a job's cron schedule. For each slot the
// engine claims a row in the job_runs ledger (unique on job and slot) in a
// short transaction, then runs the job's work with the slot's context
// (Slot: its time, never the current time, and a key that is the same on
// every attempt):
//
//   - a TxJob's work runs inside the transaction that marks the slot
//     succeeded, so its effect commits exactly once;
//   - a Job's work (a request, a process) runs outside the database, and a
//     second transaction records its success: at-least-once delivery,
//     recorded once.
//
// Every ledger transaction checks, under a shared lock on the term row held
// to its commit, that the leadership term (the fence) issued when this
// process started leading is still the database's current one, so a leader
// that lost its lease without noticing (frozen, partitioned) cannot record a
// slot (see Ledger). The ledger owns its tables and their migration; work
// that needs tables of its own implements Migrator.
//
// Each job has one loop that runs its slots in order, so a job never
// overlaps itself, while different jobs run side by side. When leadership
// starts, each job catches up: the slots after its last succeeded slot are
// run oldest first, at most Policy.CatchUpWindow back and at most
// Policy.CatchUpLimit of the most recent; older ones are reported as missed.
// A job with no history runs only its most recent slot; one whose slots all
// failed so far is caught up from its first slot in the ledger. A failed slot is
// retried with capped exponential backoff until it succeeds, its attempts
// run out, or its deadline passes (the next slot, but at least the timeout
// after the first attempt).
//
// The job set can change while leading (Set): a new job starts from the
// change, a removed one stops after its running attempt (a failed slot of
// a removed job is not retried), a changed schedule
// starts from the change (no slot the old schedule never had is replayed),
// and a suspended job starts no new slot. The ledger, not the in-memory
// plan, decides whether a slot runs, so no change runs a slot twice.
//
// While leading, the engine also prunes each job's finished ledger rows older
// than its Policy.HistoryRetention, in small fenced batches, never the last
// success or a running row; a slot whose row was pruned is refused, never
// run again (see prune.go).
//
// The engine knows no kind of job: kinds build Definitions, and the engine
// runs their Work through the TxJob and Job interfaces.
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
	"slices"
	"sync"
	"time"

	"gorm.io/gorm"
	"k8s.io/utils/clock"

	"github.com/leasecron/leasecron/pkg/model"
)

// DefaultCatchUpLimit is the catch-up limit the controller uses unless told otherwise.
const DefaultCatchUpLimit = 100

// Options configure a Scheduler.
type Options struct {
	// Defaults fill the fields a job's Policy leaves zero; its own zero
	// fields mean DefaultPolicy's.
	Defaults Policy
	// ShutdownGrace is how long running slots may finish after shutdown
	// begins. Default 30s.
	ShutdownGrace time.Duration
	// Clock is the scheduler's clock, replaceable to allow for less flaky
	// testing. Default the real clock.
	Clock clock.Clock
	// Log receives one line per slot outcome. Default slog.Default().
	Log *slog.Logger
	// Metrics, if set, are told what happens to every slot.
	Metrics Metrics
	// PruneInterval is how often the leader prunes the ledger's history
	// (see Policy.HistoryRetention), on the wall clock. Default 5m.
	PruneInterval time.Duration
	// PruneBatch is how many rows one prune transaction removes at most.
	// Default DefaultPruneBatch.
	PruneBatch int
}

func (o *Options) defaults() {
	o.Defaults = o.Defaults.withDefaults(defaultPolicy)
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = 5 * time.Minute
	}
	if o.PruneBatch <= 0 {
		o.PruneBatch = DefaultPruneBatch
	}
}

// Scheduler runs a set of jobs through the ledger.
type Scheduler struct {
	opts   Options
	ledger *Ledger

	mu   sync.Mutex
	defs map[string]Definition // the current set, policies filled in
	lead *leadState            // while Lead runs
}

// New returns a scheduler that writes to db as holder and runs defs.
func New(db *gorm.DB, holder string, defs []Definition, opts Options) (*Scheduler, error) {
	opts.defaults()
	l := NewLedger(db, holder)
	l.now = opts.Clock.Now
	s := &Scheduler{opts: opts, ledger: l}
	if err := s.Set(defs); err != nil {
		return nil, err
	}
	return s, nil
}

// Ledger returns the scheduler's ledger.
func (s *Scheduler) Ledger() *Ledger { return s.ledger }

// Definitions returns the current job set, sorted by name, with every
// policy field filled in.
func (s *Scheduler) Definitions() []Definition {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Definition, 0, len(s.defs))
	for _, d := range s.defs {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Definition) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Set replaces the job set. It checks every definition first and changes
// nothing if one is wrong or two share a name. While Lead runs, the change
// takes effect at once: new jobs start from now, removed ones stop after
// their running slot, and a job whose schedule changed starts from now.
func (s *Scheduler) Set(defs []Definition) error {
	next := make(map[string]Definition, len(defs))
	for _, d := range defs {
		if err := d.Check(); err != nil {
			return err
		}
		if _, dup := next[d.Name]; dup {
			return fmt.Errorf("job %s is defined twice", d.Name)
		}
		d.Policy = d.Policy.withDefaults(s.opts.Defaults)
		next[d.Name] = d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defs = next
	if s.lead != nil {
		s.lead.apply(s, next)
	}
	return nil
}

func (s *Scheduler) definition(name string) (Definition, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.defs[name]
	return d, ok
}

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

// leadState is what one call of Lead shares with Set.
type leadState struct {
	ctx   context.Context // leadership
	work  context.Context // running slots: outlives ctx by the shutdown grace
	drain <-chan struct{}
	fence Fence
	fail  context.CancelCauseFunc
	wg    sync.WaitGroup
	loops map[string]*jobLoop
}

// jobLoop is one job's loop while leading.
type jobLoop struct {
	mu      sync.Mutex
	def     Definition
	changed time.Time // when the schedule last changed while leading
	gen     int       // counts changes, so the loop notices one
	seen    int       // the gen the loop has acted on
	removed bool
	wake    chan struct{}
	// triggers are slots asked for by Trigger, run before the next
	// scheduled one.
	triggers []time.Time
}

// nextTrigger takes the oldest slot asked for by Trigger, if any.
func (jl *jobLoop) nextTrigger() (time.Time, bool) {
	jl.mu.Lock()
	defer jl.mu.Unlock()
	if len(jl.triggers) == 0 {
		return time.Time{}, false
	}
	t := jl.triggers[0]
	jl.triggers = jl.triggers[1:]
	return t, true
}

// ErrNotLeading means this process does not lead: Trigger has no loop to
// run the slot in.
var ErrNotLeading = errors.New("this process does not lead")

// Trigger runs one slot of the job at slot through the ledger, in the job's
// loop (after the slot it is running, before its next scheduled one, so the
// job still never overlaps itself), even while the job is suspended. Like
// any slot it runs once: a slot that already succeeded is skipped. It
// returns ErrNotLeading unless this process leads.
func (s *Scheduler) Trigger(name string, slot time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lead == nil {
		return ErrNotLeading
	}
	jl, ok := s.lead.loops[name]
	if !ok {
		return fmt.Errorf("unknown job %q", name)
	}
	jl.mu.Lock()
	removed := jl.removed
	if !removed {
		jl.triggers = append(jl.triggers, slot.UTC())
	}
	jl.mu.Unlock()
	if removed {
		return fmt.Errorf("unknown job %q", name)
	}
	jl.poke()
	return nil
}

func (jl *jobLoop) state() (Definition, time.Time, int, bool) {
	jl.mu.Lock()
	defer jl.mu.Unlock()
	return jl.def, jl.changed, jl.gen, jl.removed
}

func (jl *jobLoop) poke() {
	select {
	case jl.wake <- struct{}{}:
	default:
	}
}

// apply starts, changes and stops loops to match defs; s.mu is held.
func (ls *leadState) apply(s *Scheduler, defs map[string]Definition) {
	now := s.opts.Clock.Now()
	for name, d := range defs {
		jl, ok := ls.loops[name]
		if !ok {
			ls.start(s, d, now)
			continue
		}
		jl.mu.Lock()
		if jl.removed || !jl.def.same(d) {
			if jl.removed || jl.def.Schedule.String() != d.Schedule.String() || jl.def.Schedule.Location().String() != d.Schedule.Location().String() {
				jl.changed = now
			}
			jl.removed = false
			jl.def = d
			jl.gen++
		}
		jl.mu.Unlock()
		jl.poke()
	}
	for name, jl := range ls.loops {
		if _, ok := defs[name]; !ok {
			jl.mu.Lock()
			jl.removed = true
			jl.gen++
			jl.mu.Unlock()
			jl.poke()
		}
	}
}

// start starts a loop for d; added is when it was added while leading
// (zero at the start of leadership). s.mu is held.
func (ls *leadState) start(s *Scheduler, d Definition, added time.Time) {
	jl := &jobLoop{def: d, changed: added, wake: make(chan struct{}, 1)}
	ls.loops[d.Name] = jl
	ls.wg.Go(func() {
		if err := s.loop(ls, jl); err != nil {
			ls.fail(err)
		}
	})
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

	ls := &leadState{ctx: ctx, work: work, drain: drain, fence: fence, fail: cancel, loops: map[string]*jobLoop{}}
	s.mu.Lock()
	if s.lead != nil {
		s.mu.Unlock()
		return errors.New("Lead is already running")
	}
	s.lead = ls
	for _, d := range s.defs {
		ls.start(s, d, time.Time{})
	}
	ls.wg.Go(func() { s.pruneLoop(ls) })
	s.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-drain:
	}
	// No loop starts from here on; the running ones see the same end.
	s.mu.Lock()
	s.lead = nil
	s.mu.Unlock()
	ls.wg.Wait()
	// Leadership lost (ctx cancelled from outside) and shutdown are not
	// errors; a newer term, a database error at start and any other cause a
	// loop or the caller gave are.
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// loop runs one job's slots in order, one at a time, following changes to
// its definition, until leadership ends, shutdown begins or the job is
// removed.
func (s *Scheduler) loop(ls *leadState, jl *jobLoop) error {
	def, changed, gen, _ := jl.state()
	defer s.loopDone(ls, jl)
	log := s.opts.Log.With("job", def.Name)
	cursor, ok, err := s.startRetrying(ls, def, log)
	if err != nil || !ok {
		return err
	}
	started := s.opts.Clock.Now()
	if def.Policy.Suspend || !changed.IsZero() {
		// Suspended at the start: nothing is caught up. Added while
		// leading: the job starts from the change.
		cursor = later(cursor, s.opts.Clock.Now())
	}
	suspendedAt := time.Time{}
	for {
		d, ch, g, removed := jl.state()
		if removed && s.forget(ls, jl) {
			return nil
		}
		if g != gen {
			if !ch.Equal(changed) { // the schedule changed: start from the change
				cursor = later(cursor, ch)
				changed = ch
			}
			gen, def = g, d
			log.Info("job changed", "schedule", def.Schedule.String(), "suspend", def.Policy.Suspend)
		}
		jl.mu.Lock()
		jl.seen = gen
		jl.mu.Unlock()
		if slot, ok := jl.nextTrigger(); ok {
			if err := s.runTriggered(ls, def, slot, log); err != nil {
				return err
			}
			continue
		}
		sched, p := def.Schedule, def.Policy
		now := s.opts.Clock.Now()
		switch {
		case p.Suspend && suspendedAt.IsZero():
			suspendedAt = now
		case !p.Suspend && !suspendedAt.IsZero():
			// Resumed: the slots that passed while suspended are missed.
			missed := countSlots(sched, cursor, now)
			if missed > 0 {
				log.Warn("slots missed while suspended", "missed", missed, "resume_after", now)
				s.opts.Metrics.Missed(def.Name, missed)
			}
			cursor, suspendedAt = later(cursor, now), time.Time{}
		}
		if p.Suspend {
			s.opts.Metrics.NextSlot(def.Name, time.Time{}, 0)
			if !s.sleep(ls, jl, nil) {
				return nil
			}
			continue
		}
		var missed int
		cursor, missed = plan(sched, p, cursor, now)
		if missed > 0 {
			log.Warn("slots missed: older than the catch-up window or beyond the catch-up limit",
				"missed", missed, "window", p.CatchUpWindow, "limit", p.CatchUpLimit, "resume_after", cursor.Add(time.Nanosecond))
			s.opts.Metrics.Missed(def.Name, missed)
		}
		next := sched.Next(cursor)
		if next.IsZero() {
			log.Warn("schedule has no further slot")
			s.opts.Metrics.NextSlot(def.Name, time.Time{}, 0)
			if !s.sleep(ls, jl, nil) {
				return nil
			}
			continue
		}
		s.publishNext(def, next)
		if d := next.Sub(now); d > 0 {
			t := s.opts.Clock.NewTimer(d)
			woke := s.sleep(ls, jl, t.C())
			t.Stop()
			if !woke {
				return nil
			}
			if s.opts.Clock.Now().Before(next) {
				continue // a change arrived: look again
			}
		}
		select {
		case <-ls.ctx.Done():
			return nil
		case <-ls.drain:
			return nil
		default:
		}
		if _, _, g, removed := jl.state(); removed || g != gen {
			continue // changed while waiting: the new definition decides
		}
		deadline := sched.Next(next)
		// While this slot runs, the one after it is the next: a slot that
		// runs past it makes that one late, as it is.
		s.publishNext(def, deadline)
		if floor := s.opts.Clock.Now().Add(p.Timeout); deadline.IsZero() || deadline.Before(floor) {
			deadline = floor
		}
		outcome, err := s.runSlot(ls.work, ls.drain, ls.fence, def, next, deadline)
		if err != nil {
			if errors.Is(err, ErrFenced) {
				log.Error("leadership term moved on: stopping", "err", err)
				return err
			}
			if ls.ctx.Err() != nil || ls.work.Err() != nil {
				log.Warn("slot interrupted", "slot", next, "err", err)
				return nil
			}
			log.Warn("slot not run here", "slot", next, "err", err)
		}
		if outcome == Succeeded && next.Before(started) {
			s.opts.Metrics.CaughtUp(def.Name)
		}
		cursor = next
	}
}

// runTriggered runs a slot asked for by Trigger; it returns an error only
// when the leadership term moved on (ErrFenced).
func (s *Scheduler) runTriggered(ls *leadState, def Definition, slot time.Time, log *slog.Logger) error {
	log.Info("running a triggered slot", "slot", slot.UTC().Format(time.RFC3339Nano))
	_, err := s.runSlot(ls.work, ls.drain, ls.fence, def, slot, s.opts.Clock.Now().Add(def.Policy.Timeout))
	switch {
	case errors.Is(err, ErrFenced):
		log.Error("leadership term moved on: stopping", "err", err)
		return err
	case err != nil:
		log.Warn("triggered slot not run here", "slot", slot.UTC().Format(time.RFC3339Nano), "err", err)
	}
	return nil
}

// sleep waits for fire (nil: forever), a change to the job, the end of
// leadership or shutdown; it reports false for the last two.
func (s *Scheduler) sleep(ls *leadState, jl *jobLoop, fire <-chan time.Time) bool {
	select {
	case <-ls.ctx.Done():
		return false
	case <-ls.drain:
		return false
	case <-jl.wake:
		return true
	case <-fire:
		return true
	}
}

// forget removes a removed job's loop and reports true, or reports false
// if the job was added again meanwhile (the loop carries on with it).
func (s *Scheduler) forget(ls *leadState, jl *jobLoop) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, _, removed := jl.state(); !removed {
		return false
	}
	s.dropLoop(ls, jl)
	return true
}

// loopDone forgets a loop that ended.
func (s *Scheduler) loopDone(ls *leadState, jl *jobLoop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLoop(ls, jl)
}

// dropLoop deletes jl from ls and its next slot from the metrics; s.mu is
// held (so a loop started again for the same name publishes after this).
func (s *Scheduler) dropLoop(ls *leadState, jl *jobLoop) {
	def, _, _, _ := jl.state()
	if ls.loops[def.Name] == jl {
		delete(ls.loops, def.Name)
		s.opts.Metrics.NextSlot(def.Name, time.Time{}, 0)
	}
}

// publishNext tells the metrics def's next slot (zero: none) and the
// schedule's interval before it.
func (s *Scheduler) publishNext(def Definition, next time.Time) {
	var interval time.Duration
	if next.IsZero() {
		s.opts.Metrics.NextSlot(def.Name, next, 0)
		return
	}
	if prev := def.Schedule.Prev(next.Add(-time.Nanosecond)); !prev.IsZero() {
		interval = next.Sub(prev)
	}
	s.opts.Metrics.NextSlot(def.Name, next, interval)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// startRetrying is start, retried with capped backoff while the database
// fails in a way that mends itself, until leadership ends or shutdown
// begins (then it reports !ok). Any other failure is returned.
func (s *Scheduler) startRetrying(ls *leadState, def Definition, log *slog.Logger) (cursor time.Time, ok bool, err error) {
	backoff := def.Policy.RetryInitial
	for {
		cursor, err := s.start(ls.ctx, def)
		switch {
		case ls.ctx.Err() != nil:
			return time.Time{}, false, nil
		case err == nil:
			return cursor, true, nil
		case !model.Transient(err):
			return time.Time{}, false, fmt.Errorf("job %s cannot start: %w", def.Name, err)
		}
		log.Warn("cannot read the job's ledger, retrying", "retry_in", backoff, "err", err)
		t := s.opts.Clock.NewTimer(backoff)
		select {
		case <-ls.ctx.Done():
			t.Stop()
			return time.Time{}, false, nil
		case <-ls.drain:
			t.Stop()
			return time.Time{}, false, nil
		case <-t.C():
		}
		backoff = min(2*backoff, def.Policy.RetryMax)
	}
}

// start returns the cursor a new leader starts from for a job: its last
// succeeded slot; for a job with no history, just before its most recent
// slot; for one whose slots all failed, just before its first.
func (s *Scheduler) start(ctx context.Context, def Definition) (time.Time, error) {
	now := s.opts.Clock.Now()
	last, history, err := s.ledger.LastSucceeded(ctx, def.Name)
	if err != nil {
		return time.Time{}, err
	}
	s.opts.Metrics.JobStarted(def.Name, last) // the last success may be another leader's: the ledger knows
	window := def.Policy.CatchUpWindow
	switch {
	case !history:
		prev := def.Schedule.Prev(now)
		if prev.IsZero() || prev.Before(now.Add(-window)) {
			return now, nil
		}
		return prev.Add(-time.Nanosecond), nil
	case last.IsZero():
		// History, but nothing ever succeeded: from the job's first slot in
		// the ledger (the first it had), not from before the job existed.
		from := now.Add(-window)
		first, _, err := FirstSlot(ctx, s.ledger.db, def.Name)
		if err != nil {
			return time.Time{}, err
		}
		return later(from, first).Add(-time.Nanosecond), nil
	default:
		return last, nil
	}
}

// maxMissedCount bounds how many missed slots are counted one by one.
const maxMissedCount = 100_000

// countSlots counts the slots in (from, to], up to maxMissedCount.
func countSlots(sched *Schedule, from, to time.Time) int {
	n := 0
	for t := sched.Next(from); !t.IsZero() && !t.After(to) && n < maxMissedCount; t = sched.Next(t) {
		n++
	}
	return n
}

// plan moves cursor forward past the slots that fall outside the catch-up
// window or beyond the catch-up limit, and reports how many it skipped.
func plan(sched *Schedule, p Policy, cursor, now time.Time) (time.Time, int) {
	missed := 0
	windowStart := now.Add(-p.CatchUpWindow)
	if cursor.Before(windowStart) {
		for t := sched.Next(cursor); !t.IsZero() && t.Before(windowStart) && missed < maxMissedCount; t = sched.Next(t) {
			missed++
		}
		cursor = windowStart.Add(-time.Nanosecond)
	}
	limit := max(p.CatchUpLimit, 0)
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

// RunSlot runs a job's slot through the ledger under fence, retrying failed
// attempts with backoff until deadline. It is what `once` and `backfill` use.
func (s *Scheduler) RunSlot(ctx context.Context, fence Fence, name string, slot, deadline time.Time) (Outcome, error) {
	def, ok := s.definition(name)
	if !ok {
		return Failed, fmt.Errorf("unknown job %q", name)
	}
	return s.runSlot(ctx, nil, fence, def, slot, deadline)
}

func (s *Scheduler) runSlot(ctx context.Context, drain <-chan struct{}, fence Fence, def Definition, slot, deadline time.Time) (Outcome, error) {
	name, p := def.Name, def.Policy
	log := s.opts.Log.With("job", name, "slot", slot.UTC().Format(time.RFC3339Nano))
	backoff := p.RetryInitial
	m := s.opts.Metrics
	m.SlotStarted(name, slot)
	for attempt := 1; ; attempt++ {
		start := s.opts.Clock.Now()
		outcome, err := s.attempt(ctx, fence, def, slot, attempt)
		elapsed := s.opts.Clock.Since(start)
		switch {
		case err == nil && outcome == Skipped:
			log.Debug("slot already done")
			m.Attempt(name, Skipped, 0)
			m.SlotDone(name, Skipped, slot)
			return Skipped, nil
		case err == nil:
			log.Info("slot succeeded", "attempt", attempt, "duration", elapsed)
			m.Attempt(name, Succeeded, elapsed)
			m.SlotDone(name, Succeeded, slot)
			return Succeeded, nil
		}
		m.Attempt(name, Failed, elapsed)
		if errors.Is(err, ErrFenced) || errors.Is(err, ErrSlotBusy) || errors.Is(err, ErrPruned) || ctx.Err() != nil {
			return Failed, err
		}
		giveUp := ""
		switch {
		case p.Attempts > 0 && attempt >= p.Attempts:
			giveUp = "slot failed, giving up: attempts used up"
		case s.opts.Clock.Now().Add(backoff).After(deadline):
			giveUp = "slot failed, giving up: deadline reached"
		}
		if giveUp != "" {
			log.Error(giveUp, "attempts", attempt, "deadline", deadline, "err", err)
			m.SlotDone(name, Failed, slot)
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
		if _, ok := s.definition(name); !ok {
			// Removed while waiting (a deleted ScheduledJob, a job taken out
			// of the file): a removed job runs no further attempt.
			log.Warn("slot failed and its job was removed: not retrying", "attempts", attempt)
			m.SlotDone(name, Failed, slot)
			return Failed, nil
		}
		backoff = min(2*backoff, p.RetryMax)
	}
}

// slotOf is the context def's work receives for slot.
func slotOf(def Definition, slot time.Time, attempt int, fence Fence) Slot {
	loc := def.Schedule.Location()
	return Slot{
		Job: def.Name, Time: slot.UTC(), Prev: def.Schedule.Prev(slot.Add(-time.Nanosecond)).UTC(),
		Date: model.DateOf(slot.In(loc)), Location: loc, Key: SlotKey(def.Name, slot),
		Attempt: attempt, Term: fence.Term,
	}
}

// attempt runs the job's slot once. Work in the ledger's transaction, on its
// first attempt, runs in one transaction that also inserts the slot's row
// as succeeded (Ledger.CompleteNew); if the slot has a row already, and for
// later attempts and work outside the database, the slot is claimed first
// (a running row, committed) and completed in a second transaction.
func (s *Scheduler) attempt(ctx context.Context, fence Fence, def Definition, slot time.Time, n int) (outcome Outcome, err error) {
	name := def.Name
	ctx, cancel := context.WithTimeout(ctx, def.Policy.Timeout)
	defer cancel()
	started := s.ledger.now()
	sc := slotOf(def, slot, n, fence)
	defer func() {
		if err == nil || errors.Is(err, ErrFenced) || errors.Is(err, ErrSlotBusy) || errors.Is(err, ErrPruned) {
			return
		}
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer fcancel()
		if ferr := s.ledger.Fail(fctx, fence, name, slot, started, err); ferr != nil {
			s.opts.Log.Warn("could not record the failure in the ledger", "job", name, "err", ferr)
		}
	}()
	if w, ok := def.Work.(TxJob); ok && n == 1 {
		err = s.ledger.CompleteNew(ctx, fence, name, slot, started, func(tx *gorm.DB) error {
			return safely(func() error { return w.RunTx(ctx, tx, sc) })
		})
		if err == nil {
			return Succeeded, nil
		}
		if !errors.Is(err, errSlotHasRow) {
			return Failed, err
		}
	}
	done, err := s.ledger.Claim(ctx, fence, name, slot)
	if err != nil {
		return Failed, err
	}
	if done {
		return Skipped, nil
	}
	switch w := def.Work.(type) {
	case TxJob:
		err = s.ledger.Complete(ctx, fence, name, slot, func(tx *gorm.DB) error {
			return safely(func() error { return w.RunTx(ctx, tx, sc) })
		})
	case Job:
		if err = safely(func() error { return w.Run(ctx, sc) }); err == nil {
			err = s.ledger.Complete(ctx, fence, name, slot, nil)
		}
	}
	if err == nil {
		return Succeeded, nil
	}
	return Failed, err
}

// safely runs fn and turns a panic into an error.
func safely(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("job panicked: %v", r)
		}
	}()
	return fn()
}

// BatchSize is how many slots RunSlots puts in one transaction.
const BatchSize = 200

// RunSlots runs a job's slots, oldest first, through the ledger under fence,
// as backfill does, and counts the outcomes. A job whose work implements
// BatchTxJob runs up to BatchSize new slots per transaction; a batch that
// fails, or that meets a slot running elsewhere or failed before, is run
// slot by slot with RunSlot's retries instead. It stops early only when ctx
// ends.
func (s *Scheduler) RunSlots(ctx context.Context, fence Fence, name string, slots []time.Time, deadline time.Time) (map[Outcome]int, error) {
	def, ok := s.definition(name)
	if !ok {
		return nil, fmt.Errorf("unknown job %q", name)
	}
	counts := map[Outcome]int{}
	batch, _ := def.Work.(BatchTxJob)
	m := s.opts.Metrics
	for len(slots) > 0 && ctx.Err() == nil {
		chunk := slots[:min(BatchSize, len(slots))]
		slots = slots[len(chunk):]
		if batch != nil {
			start := s.opts.Clock.Now()
			done, err := s.ledger.CompleteBatch(ctx, fence, name, chunk, func(tx *gorm.DB, todo []time.Time) error {
				scs := make([]Slot, len(todo))
				for i, t := range todo {
					scs[i] = slotOf(def, t, 1, fence)
				}
				return batch.RunTxBatch(ctx, tx, scs)
			})
			if err == nil {
				ran := len(chunk) - len(done)
				counts[Succeeded] += ran
				counts[Skipped] += len(done)
				s.opts.Log.Info("slots succeeded", "job", name, "slots", ran, "skipped", len(done), "duration", s.opts.Clock.Since(start))
				for _, t := range chunk {
					out := Succeeded
					if slices.ContainsFunc(done, t.Equal) {
						out = Skipped
					}
					m.Attempt(name, out, 0)
					m.SlotDone(name, out, t)
				}
				continue
			}
			if errors.Is(err, ErrFenced) || ctx.Err() != nil {
				return counts, err
			}
			s.opts.Log.Debug("running the batch slot by slot", "job", name, "reason", err)
		}
		for _, slot := range chunk {
			out, err := s.runSlot(ctx, nil, fence, def, slot, deadline)
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
