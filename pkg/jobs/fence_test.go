package jobs

import (
	"context"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/model"
)

// serverDialects are the dialects with more than one writer: on SQLite every
// write transaction holds the database's one write lock to its end.
var serverDialects = []string{"mysql", "postgres"}

// counterTable makes a table of counters: work that is not idempotent, so a
// slot that commits twice shows as 2.
func counterTable(t *testing.T, db *gorm.DB, names ...string) {
	t.Helper()
	if err := db.Exec("CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := db.Exec("INSERT INTO counters (name, n) VALUES (?, 0)", n).Error; err != nil {
			t.Fatal(err)
		}
	}
}

func counter(t *testing.T, db *gorm.DB, name string) int {
	t.Helper()
	var n int
	if err := db.Raw("SELECT n FROM counters WHERE name = ?", name).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func increment(tx *gorm.DB, name string) error {
	return tx.Exec("UPDATE counters SET n = n + 1 WHERE name = ?", name).Error
}

// awaitResult waits for an error from ch, failing the test after d.
func awaitResult(t *testing.T, ch <-chan error, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not finish within %s: blocked behind another transaction", what, d)
		return nil
	}
}

// One job's long transaction must block neither another job's claim and
// commit nor a new leader's term; and the long one, still open when the new
// term began, must not commit.
func TestJobTransactionsRunSideBySide(t *testing.T) {
	for _, d := range serverDialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := openDB(t, testenv.DSN(t, d))
			counterTable(t, db, "long", "short")
			old, next := NewLedger(db, "old"), NewLedger(db, "next")
			slot := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
			fence, err := old.BeginTerm(ctx, "s")
			if err != nil {
				t.Fatal(err)
			}
			for _, job := range []string{"long", "short"} {
				if done, err := old.Claim(ctx, fence, job, slot); err != nil || done {
					t.Fatalf("claim %s = %v, %v", job, done, err)
				}
			}

			inside, release := make(chan struct{}), make(chan struct{})
			longDone := make(chan error, 1)
			go func() {
				longDone <- old.Complete(ctx, fence, "long", slot, func(tx *gorm.DB) error {
					if err := increment(tx, "long"); err != nil {
						return err
					}
					close(inside)
					<-release // the job is still running, its transaction open
					return nil
				})
			}()
			<-inside
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()

			// Another job of the same leader claims, runs and commits.
			shortDone := make(chan error, 1)
			go func() {
				shortDone <- old.Complete(ctx, fence, "short", slot, func(tx *gorm.DB) error { return increment(tx, "short") })
			}()
			if err := awaitResult(t, shortDone, 10*time.Second, "another job's transaction"); err != nil {
				t.Fatalf("short job: %v", err)
			}
			claimDone := make(chan error, 1)
			go func() {
				_, err := old.Claim(ctx, fence, "short", slot.Add(time.Hour))
				claimDone <- err
			}()
			if err := awaitResult(t, claimDone, 10*time.Second, "another job's claim"); err != nil {
				t.Fatalf("claim: %v", err)
			}

			// A new leader begins its term while the long job still runs.
			termDone := make(chan error, 1)
			go func() {
				_, err := next.BeginTerm(ctx, "s")
				termDone <- err
			}()
			if err := awaitResult(t, termDone, 10*time.Second, "a new leader's BeginTerm"); err != nil {
				t.Fatalf("BeginTerm: %v", err)
			}

			// The old leader's job finishes now: it is fenced, nothing commits.
			close(release)
			if err := awaitResult(t, longDone, 10*time.Second, "the long job"); !errors.Is(err, ErrFenced) {
				t.Fatalf("long job after a new term = %v, want ErrFenced", err)
			}
			if n := counter(t, db, "long"); n != 0 {
				t.Fatalf("fenced job's work committed: counter = %d, want 0", n)
			}
			if n := counter(t, db, "short"); n != 1 {
				t.Fatalf("short job's counter = %d, want 1", n)
			}
		})
	}
}

// A leader cut off in the middle of a job's transaction (the network drops
// its traffic, its session stays open on the server holding the row locks
// its work took) must not keep the next leader from running the slot for
// longer than the session's idle-in-transaction limit; and the counter the
// slot increments ends at exactly 1.
func TestBlackHoledLeaderReleasesLocksWithinIdleLimit(t *testing.T) {
	const idle = 2 * time.Second
	for _, d := range serverDialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			direct := testenv.DSN(t, d)
			db := openDB(t, direct)
			counterTable(t, db, "x")

			proxy, through := testenv.ProxyDSN(t, direct)
			dsn, err := model.ParseDSN(through)
			if err != nil {
				t.Fatal(err)
			}
			cut, err := model.OpenWith(ctx, dsn, model.OpenOptions{Wait: 10 * time.Second, Log: quietLog(),
				Limits: model.SessionLimits{IdleInTransaction: idle, Statement: time.Minute}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = model.Close(cut) })

			old, next := NewLedger(cut, "old"), NewLedger(db, "next")
			slot := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
			fence, err := old.BeginTerm(ctx, "s")
			if err != nil {
				t.Fatal(err)
			}
			if done, err := old.Claim(ctx, fence, "job", slot); err != nil || done {
				t.Fatalf("old claim = %v, %v", done, err)
			}
			oldCtx, cancelOld := context.WithCancel(ctx)
			defer cancelOld()
			holed := make(chan time.Time, 1)
			oldDone := make(chan error, 1)
			go func() {
				oldDone <- old.Complete(oldCtx, fence, "job", slot, func(tx *gorm.DB) error {
					if err := increment(tx, "x"); err != nil {
						return err
					}
					proxy.BlackHole() // cut off with the row lock held
					holed <- time.Now()
					return nil
				})
			}()
			start := <-holed

			newDone := make(chan error, 1)
			go func() {
				f, err := next.BeginTerm(ctx, "s")
				if err != nil {
					newDone <- err
					return
				}
				if done, err := next.Claim(ctx, f, "job", slot); err != nil || done {
					newDone <- errors.Join(err, errors.New("claim found the slot done"))
					return
				}
				newDone <- next.Complete(ctx, f, "job", slot, func(tx *gorm.DB) error { return increment(tx, "x") })
			}()
			limit := idle + time.Second
			if err := awaitResult(t, newDone, 20*time.Second, "the new leader's first slot"); err != nil {
				t.Fatalf("new leader's slot: %v", err)
			}
			took := time.Since(start)
			t.Logf("%s: new leader ran the slot %s after the old leader was cut off (idle limit %s)", d, took.Round(time.Millisecond), idle)
			if took > limit {
				t.Fatalf("new leader ran the slot %s after the cut, want within the idle limit + 1s (%s)", took, limit)
			}
			if n := counter(t, db, "x"); n != 1 {
				t.Fatalf("counter = %d, want 1", n)
			}
			cancelOld()
			if err := <-oldDone; err == nil {
				t.Fatal("the cut-off leader's transaction reported success")
			}
			if n := counter(t, db, "x"); n != 1 {
				t.Fatalf("counter = %d after the old leader gave up, want 1", n)
			}
		})
	}
}

// sessionSettings opens dsn with limits and reads back what the server
// applies to a session.
func sessionSettings(t *testing.T, raw string, limits model.SessionLimits) map[string]string {
	t.Helper()
	ctx := context.Background()
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.OpenWith(ctx, dsn, model.OpenOptions{Wait: 10 * time.Second, Log: quietLog(), Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(db) })
	got, err := model.SessionSettings(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// The limits reach the server on every session, and a limit the DSN sets
// itself is kept.
func TestSessionLimitsAreSetOnTheServer(t *testing.T) {
	want := map[string]map[string]string{
		"mysql":    {"idle_transaction_timeout": "7", "max_statement_time": "90"},
		"postgres": {"idle_in_transaction_session_timeout": "6500ms", "statement_timeout": "90s"},
	}
	for _, d := range serverDialects {
		t.Run(d, func(t *testing.T) {
			got := sessionSettings(t, testenv.DSN(t, d), model.SessionLimits{IdleInTransaction: 6500 * time.Millisecond, Statement: 90 * time.Second})
			for k, v := range want[d] {
				if got[k] != v {
					t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
	t.Run("postgres keeps the DSN's own value", func(t *testing.T) {
		got := sessionSettings(t, testenv.DSN(t, "postgres")+"&statement_timeout=1234", model.SessionLimits{Statement: time.Minute})
		if got["statement_timeout"] != "1234ms" {
			t.Fatalf("statement_timeout = %q, want the DSN's 1234ms", got["statement_timeout"])
		}
	})
}

// Work that is not idempotent proves the fence on every dialect: a leader
// whose term was superseded between its claim and its commit adds nothing,
// the new leader's run adds one, and a further run of the done slot none.
func TestStaleLeaderAddsNothingToACounter(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		counterTable(t, db, "n")
		old, next := NewLedger(db, "old"), NewLedger(db, "next")
		slot := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
		work := func(tx *gorm.DB) error { return increment(tx, "n") }
		f1, err := old.BeginTerm(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if done, err := old.Claim(ctx, f1, "job", slot); err != nil || done {
			t.Fatalf("old claim = %v, %v", done, err)
		}
		f2, err := next.BeginTerm(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Complete(ctx, f1, "job", slot, work); !errors.Is(err, ErrFenced) {
			t.Fatalf("stale Complete = %v, want ErrFenced", err)
		}
		if n := counter(t, db, "n"); n != 0 {
			t.Fatalf("counter = %d after the stale leader's run, want 0", n)
		}
		if done, err := next.Claim(ctx, f2, "job", slot); err != nil || done {
			t.Fatalf("new claim = %v, %v", done, err)
		}
		if err := next.Complete(ctx, f2, "job", slot, work); err != nil {
			t.Fatal(err)
		}
		if done, err := next.Claim(ctx, f2, "job", slot); err != nil || !done {
			t.Fatalf("claim of the done slot = %v, %v; want done", done, err)
		}
		if n := counter(t, db, "n"); n != 1 {
			t.Fatalf("counter = %d, want 1", n)
		}
	})
}
