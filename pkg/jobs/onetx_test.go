package jobs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/model"
)

// A first attempt of work in the ledger's transaction is one transaction
// (CompleteNew). These tests hold it to the claim path's rules: two
// processes running the same slot at once commit one effect; a fenced
// leader commits nothing; a slot that has a row already is run through the
// claim path, and the first try's work is rolled back.

// counterJob increments its counter in the ledger's transaction, after
// before (if set) returns.
type counterJob struct {
	name   string
	before func()
	calls  atomic.Int32
}

func (j *counterJob) RunTx(ctx context.Context, tx *gorm.DB, _ Slot) error {
	j.calls.Add(1)
	if j.before != nil {
		j.before()
	}
	return increment(tx.WithContext(ctx), j.name)
}

func TestTwoProcessesRunningOneSlotCommitOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		counterTable(t, db, "n")
		slot := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
		// On the servers both processes are inside the job's work before
		// either commits; SQLite has one writer, so there one runs after
		// the other.
		oneWriter := db.Dialector.Name() == model.SQLite
		var arrived sync.WaitGroup
		arrived.Add(2)
		job := &counterJob{name: "n"}
		if !oneWriter {
			job.before = func() { arrived.Done(); arrived.Wait() }
		}
		outs := make(chan Outcome, 2)
		errs := make(chan error, 2)
		for _, holder := range []string{"a", "b"} {
			s, err := New(db, holder, []Definition{def(t, "n", "@hourly", time.UTC, job)}, Options{Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				out, err := s.RunSlot(context.Background(), Fence{}, "n", slot, time.Now().Add(time.Minute))
				outs <- out
				errs <- err
			}()
		}
		got := map[Outcome]int{}
		for range 2 {
			got[<-outs]++
			if err := <-errs; err != nil {
				t.Fatalf("RunSlot: %v", err)
			}
		}
		if got[Succeeded] != 1 || got[Skipped] != 1 {
			t.Fatalf("outcomes = %v, want one succeeded and one skipped", got)
		}
		if n := counter(t, db, "n"); n != 1 {
			t.Fatalf("counter = %d after two processes ran the slot, want 1", n)
		}
		if c := job.calls.Load(); !oneWriter && c != 2 {
			t.Fatalf("work ran %d times, want 2 (both inside it at once)", c)
		}
		rs := runs(t, db, "n")
		if len(rs) != 1 || rs[0].Status != StatusSucceeded || rs[0].Attempts != 1 {
			t.Fatalf("ledger = %+v, want one succeeded row after one attempt", rs)
		}
		if rs[0].StartedAt == nil || rs[0].FinishedAt == nil || rs[0].FinishedAt.Before(*rs[0].StartedAt) {
			t.Fatalf("row times = %v .. %v, want started before finished", rs[0].StartedAt, rs[0].FinishedAt)
		}
	})
}

// A leader whose first attempt is still running when a new term begins
// commits neither its work nor a row; the new leader then runs the slot.
func TestFencedFirstAttemptCommitsNothing(t *testing.T) {
	for _, d := range serverDialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := openDB(t, testenv.DSN(t, d))
			counterTable(t, db, "n")
			slot := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
			inside, release := make(chan struct{}), make(chan struct{})
			slow := &counterJob{name: "n", before: func() { close(inside); <-release }}
			old, err := New(db, "old", []Definition{def(t, "n", "@hourly", time.UTC, slow)}, Options{Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			f1, err := old.Ledger().BeginTerm(ctx, "s")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := old.RunSlot(ctx, f1, "n", slot, time.Now().Add(time.Minute))
				done <- err
			}()
			<-inside
			next, err := New(db, "next", []Definition{def(t, "n", "@hourly", time.UTC, &counterJob{name: "n"})}, Options{Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			f2, err := next.Ledger().BeginTerm(ctx, "s")
			if err != nil {
				t.Fatal(err)
			}
			close(release)
			if err := awaitResult(t, done, 10*time.Second, "the old leader's slot"); !errors.Is(err, ErrFenced) {
				t.Fatalf("old leader's RunSlot = %v, want ErrFenced", err)
			}
			if n := counter(t, db, "n"); n != 0 {
				t.Fatalf("fenced first attempt committed: counter = %d", n)
			}
			if rs := runs(t, db, "n"); len(rs) != 0 {
				t.Fatalf("fenced first attempt left ledger rows %+v", rs)
			}
			if out, err := next.RunSlot(ctx, f2, "n", slot, time.Now().Add(time.Minute)); err != nil || out != Succeeded {
				t.Fatalf("new leader's RunSlot = %v, %v", out, err)
			}
			if n := counter(t, db, "n"); n != 1 {
				t.Fatalf("counter = %d, want 1", n)
			}
		})
	}
}

// A slot that failed under an earlier leader has a row: the first attempt
// of the next leader sees it before it runs any work and takes the claim
// path, which takes the failed row over. (A row that appears only after
// that read is found at the insert: TestTwoProcessesRunningOneSlotCommitOnce.)
func TestFirstAttemptOnAFailedRowTakesTheClaimPath(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		counterTable(t, db, "n")
		slot := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
		earlier := NewLedger(db, "earlier")
		f1, err := earlier.BeginTerm(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if done, err := earlier.Claim(ctx, f1, "n", slot); err != nil || done {
			t.Fatalf("claim = %v, %v", done, err)
		}
		if err := earlier.Fail(ctx, f1, "n", slot, slot, errors.New("boom")); err != nil {
			t.Fatal(err)
		}
		job := &counterJob{name: "n"}
		s, err := New(db, "next", []Definition{def(t, "n", "@hourly", time.UTC, job)}, Options{Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		f2, err := s.Ledger().BeginTerm(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if out, err := s.RunSlot(ctx, f2, "n", slot, time.Now().Add(time.Minute)); err != nil || out != Succeeded {
			t.Fatalf("RunSlot = %v, %v", out, err)
		}
		if n, c := counter(t, db, "n"), job.calls.Load(); n != 1 || c != 1 {
			t.Fatalf("counter = %d after %d runs of the work, want 1 after 1", n, c)
		}
		rs := runs(t, db, "n")
		if len(rs) != 1 || rs[0].Status != StatusSucceeded || rs[0].Attempts != 2 || rs[0].Holder != "next" {
			t.Fatalf("ledger = %+v, want the failed row taken over: succeeded by next, 2 attempts", rs)
		}
	})
}

// blockingJob holds its transaction (and so one of the pool's connections)
// open until release is closed.
type blockingJob struct {
	inside  chan string
	release chan struct{}
}

func (j blockingJob) RunTx(ctx context.Context, tx *gorm.DB, s Slot) error {
	if err := tx.WithContext(ctx).Exec("SELECT 1").Error; err != nil {
		return err
	}
	select {
	case j.inside <- s.Job:
	default: // the test has seen enough
	}
	select {
	case <-j.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// oneElector leads at once and until ctx ends: the election is not what
// this test is about.
type oneElector struct{}

func (oneElector) Run(ctx context.Context, lead func(context.Context) error) error { return lead(ctx) }
func (oneElector) Scope() string                                                   { return "s" }

// Jobs holding every connection of a bounded pool must not make the leader
// take the database for lost: its term and its watch use their own pool.
// Without RunOptions.Control the watch's ping waits behind the jobs and the
// leader lets go after the database-lost timeout.
func TestFullPoolDoesNotLoseTheDatabase(t *testing.T) {
	for _, control := range []bool{true, false} {
		name := map[bool]string{true: "own-pool", false: "shared-pool"}[control]
		t.Run(name, func(t *testing.T) {
			raw := testenv.DSN(t, "postgres")
			dsn, err := model.ParseDSN(raw)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const poolSize = 2
			db, err := model.OpenWith(ctx, dsn, model.OpenOptions{Wait: 10 * time.Second, Log: quietLog(), MaxConns: poolSize})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = model.Close(db) })
			if err := Migrate(ctx, db, nil); err != nil {
				t.Fatal(err)
			}
			job := blockingJob{inside: make(chan string, poolSize+1), release: make(chan struct{})}
			var defs []Definition
			for _, n := range []string{"a", "b", "c"} { // one more than the pool holds
				defs = append(defs, def(t, n, "@every 1s", time.UTC, job))
			}
			s, err := New(db, "me", defs, Options{Log: quietLog(), ShutdownGrace: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ro := RunOptions{DatabaseLostTimeout: 500 * time.Millisecond}
			if control {
				ctl, err := model.OpenWith(ctx, dsn, model.OpenOptions{Wait: 10 * time.Second, Log: quietLog(), MaxConns: 2})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = model.Close(ctl) })
				ro.Control = ctl
			}
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, oneElector{}, ro) }()
			for range poolSize {
				select {
				case <-job.inside:
				case err := <-done:
					t.Fatalf("Run returned %v before the jobs filled the pool", err)
				case <-time.After(20 * time.Second):
					t.Fatal("the jobs never started")
				}
			}
			// The pool is full and the third job waits for a connection.
			// Four database-lost timeouts pass with the jobs holding it.
			select {
			case err := <-done:
				if control {
					t.Fatalf("leader let go with a full jobs' pool: %v", err)
				}
				if !errors.Is(err, ErrDatabaseLost) {
					t.Fatalf("Run = %v, want ErrDatabaseLost (the shared pool starves the watch)", err)
				}
				close(job.release)
				return
			case <-time.After(4 * ro.DatabaseLostTimeout):
			}
			if !control {
				t.Fatal("with one pool the watch's ping should have waited behind the jobs and lost the database")
			}
			close(job.release)
			// The waiting job gets a connection once the others finish.
			select {
			case <-job.inside:
			case err := <-done:
				t.Fatalf("Run returned %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("the third job never got a connection")
			}
			cancel()
			if err := awaitResult(t, done, 20*time.Second, "shutdown"); err != nil {
				t.Fatalf("Run after shutdown = %v", err)
			}
		})
	}
}
