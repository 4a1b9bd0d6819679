package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/model"
)

// Elector is what Run needs of an election: pkg/leader's Lease and FileLock
// electors are ones. Run calls lead while this process leads and returns
// once it has let go; lead's context ends when leadership is lost.
type Elector interface {
	Run(ctx context.Context, lead func(ctx context.Context) error) error
	Scope() string
}

// ErrDatabaseLost ends leadership when the database has been out of reach
// for RunOptions.DatabaseLostTimeout.
var ErrDatabaseLost = errors.New("database out of reach")

// RunOptions configure Run.
type RunOptions struct {
	// DatabaseLostTimeout: a leader that cannot begin its term or reach the
	// database for this long lets go, so that a process that can reach it
	// leads. Default 1m.
	DatabaseLostTimeout time.Duration
	// Rejoin, if above zero, makes Run campaign again this long after it
	// let go for want of a database (a file lock: the process stays up);
	// zero makes Run return ErrDatabaseLost (a Lease: the Pod restarts).
	Rejoin time.Duration
	// Scrub removes secrets from database errors before they are logged
	// (model.DSN.Scrub). Default: errors as they are.
	Scrub func(error) error
	// OnLead, if set, is called with true when this process starts leading
	// and false when it stops.
	OnLead func(leading bool)
	// Control, if set, is a second pool to the same database for the
	// leader's own statements: beginning its term and the watch that pings
	// the database. With a bounded jobs' pool, jobs that hold every
	// connection (long work in the ledger's transaction) would otherwise
	// keep the ping waiting until the leader took the database for lost.
	// One or two connections are enough. Default: the scheduler's pool.
	Control *gorm.DB
}

// Run is the whole life of a replica: it campaigns with e and, while it
// leads, begins a leadership term in the database (the fence) and runs the
// job set under it, until ctx ends. Shutdown (ctx) lets running slots finish
// within Options.ShutdownGrace before leadership is released. It returns nil
// after a clean shutdown, and otherwise why it stopped: lost leadership
// (a newer term: ErrFenced), ErrDatabaseLost, or the elector's error.
func (s *Scheduler) Run(ctx context.Context, e Elector, o RunOptions) error {
	if o.DatabaseLostTimeout <= 0 {
		o.DatabaseLostTimeout = time.Minute
	}
	if o.Scrub == nil {
		o.Scrub = func(err error) error { return err }
	}
	log := s.opts.Log
	control := s.ledger
	if o.Control != nil {
		control = NewLedger(o.Control, s.ledger.holder)
	}
	lead := func(leaderCtx context.Context) error {
		if ctx.Err() != nil {
			return nil // shutting down: won the election too late to lead
		}
		if o.OnLead != nil {
			o.OnLead(true)
			defer o.OnLead(false)
		}
		leadCtx, stop := context.WithCancelCause(leaderCtx)
		defer stop(nil)
		fence, err := s.beginTerm(leadCtx, ctx, control, e.Scope(), o)
		if err != nil || fence.Manual() {
			return err // lost, shutting down before the term began, or no database
		}
		log.Info("leading", "scope", e.Scope(), "term", fence.Term)
		go s.watchDatabase(leadCtx, control.db, o, stop)
		err = s.Lead(leadCtx, ctx.Done(), fence)
		log.Info("stopped leading", "term", fence.Term)
		return err
	}
	for {
		err := e.Run(ctx, lead)
		if o.Rejoin <= 0 || !errors.Is(err, ErrDatabaseLost) || ctx.Err() != nil {
			return err
		}
		// Leadership is released: let a process that can reach the database
		// take it before this one asks again.
		log.Error("let go of leadership: this process cannot reach the database", "err", err, "retry_in", o.Rejoin)
		select {
		case <-ctx.Done():
		case <-time.After(o.Rejoin):
		}
	}
}

// beginTerm takes a new leadership term, retrying while the database fails,
// until leadership is lost, shutdown begins (both cancel a BeginTerm under
// way; shutdown returns the zero fence) or the database-lost timeout has
// passed without a term (ErrDatabaseLost).
func (s *Scheduler) beginTerm(leaderCtx, shutdown context.Context, l *Ledger, scope string, o RunOptions) (Fence, error) {
	ctx, cancel := context.WithCancel(leaderCtx)
	defer cancel()
	defer context.AfterFunc(shutdown, cancel)()
	giveUp := time.Now().Add(o.DatabaseLostTimeout)
	backoff := 250 * time.Millisecond
	for {
		fence, err := l.BeginTerm(ctx, scope)
		if err == nil {
			return fence, nil
		}
		err = o.Scrub(err)
		switch {
		case leaderCtx.Err() != nil:
			return Fence{}, leaderCtx.Err()
		case shutdown.Err() != nil:
			return Fence{}, nil // the zero (manual) fence: nothing to lead
		case !time.Now().Add(backoff).Before(giveUp):
			return Fence{}, fmt.Errorf("%w: no leadership term after %s: %w", ErrDatabaseLost, o.DatabaseLostTimeout, err)
		}
		s.opts.Log.Warn("cannot begin a leadership term, retrying", "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			continue // the next BeginTerm fails at once and says which
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// watchDatabase pings db while this process leads and, once no ping has
// succeeded for the database-lost timeout, ends leadership with
// ErrDatabaseLost.
func (s *Scheduler) watchDatabase(ctx context.Context, db *gorm.DB, o RunOptions, stop context.CancelCauseFunc) {
	lostAfter := o.DatabaseLostTimeout
	every := max(min(lostAfter/4, 5*time.Second), 10*time.Millisecond)
	lastOK := time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		err := o.Scrub(model.Ping(pctx, db))
		cancel()
		switch {
		case err == nil:
			lastOK = time.Now()
		case ctx.Err() != nil:
			return
		case time.Since(lastOK) >= lostAfter:
			stop(fmt.Errorf("%w: no answer for %s: %w", ErrDatabaseLost, time.Since(lastOK).Round(time.Second), err))
			return
		default:
			s.opts.Log.Warn("leader cannot reach the database", "since", time.Since(lastOK).Round(time.Second), "gives_up_after", lostAfter, "err", err)
		}
	}
}
