package jobs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
)

// TestLastSuccessFromLedgerWhenLeadershipStarts: a new leader whose job's
// last slot was run by an earlier leader reports that slot's time at once,
// before it runs anything (a daily job would otherwise have no series for up
// to a day after every failover).
func TestLastSuccessFromLedgerWhenLeadershipStarts(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		h := newHarness(t, db, p.Name(), p, "0 0 0 * * *", time.UTC, minute(12, 0), nil)
		done := minute(0, 0) // today's slot, run by an earlier leader; the next is tomorrow
		seed(t, db, p.Name(), done.Add(-24*time.Hour))
		seed(t, db, p.Name(), done)
		_, stop := h.lead(t)
		awaitWaiting(t, h.clock)
		if got := h.m.lastSuccess(p.Name()); !got.Equal(done) {
			t.Errorf("last success = %v, want %s (from the ledger)", got, done)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if n := len(p.started); n != 0 {
			t.Fatalf("the leader ran %d slots: the gauge must come from the ledger, not from a run", n)
		}
	})
}

// TestSlotsCountEachSlotOnce: leasecron_job_runs_total counts attempts, and
// leasecron_job_slots_total counts each slot once by how it ended, so a slot
// that a retry fixed is no failure there, and one that failed for good is
// exactly one.
func TestSlotsCountEachSlotOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		var calls atomic.Int32
		p.do = func(context.Context, time.Time) error {
			if calls.Add(1) < 3 {
				return errors.New("transient")
			}
			return nil
		}
		m := newRecorder()
		s, err := New(db, "manual", []Definition{def(t, "probe", "@daily", time.UTC, p)}, Options{
			Log: quietLog(), Defaults: Policy{RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond}, Metrics: m,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		fixed, broken := minute(0, 0), minute(0, 0).Add(24*time.Hour)
		if out, err := s.RunSlot(ctx, Fence{}, "probe", fixed, time.Now().Add(time.Minute)); err != nil || out != Succeeded {
			t.Fatalf("RunSlot = %v, %v; want Succeeded after retries", out, err)
		}
		p.do = func(context.Context, time.Time) error { return errors.New("permanent") }
		if out, err := s.RunSlot(ctx, Fence{}, "probe", broken, time.Now().Add(500*time.Millisecond)); err != nil || out != Failed {
			t.Fatalf("RunSlot = %v, %v; want Failed", out, err)
		}
		if out, err := s.RunSlot(ctx, Fence{}, "probe", fixed, time.Now().Add(time.Minute)); err != nil || out != Skipped {
			t.Fatalf("RunSlot = %v, %v; want Skipped", out, err)
		}

		rs := runs(t, db, "probe")
		if len(rs) != 2 || rs[0].Status != StatusSucceeded || rs[1].Status != StatusFailed || rs[1].Attempts < 2 {
			t.Fatalf("ledger = %+v, want the first slot succeeded and the second failed after several attempts", rs)
		}
		failedAttempts := float64(rs[0].Attempts - 1 + rs[1].Attempts)
		for _, c := range []struct {
			name string
			key  string
			want float64
		}{
			{"attempts failed", "attempts/probe/failed", failedAttempts},
			{"attempts succeeded", "attempts/probe/succeeded", 1},
			{"slots failed", "slots/probe/failed", 1},
			{"slots succeeded", "slots/probe/succeeded", 1},
			{"slots skipped", "slots/probe/skipped", 1},
		} {
			if got := m.get(c.key); got != c.want {
				t.Errorf("%s = %v, want %v", c.name, got, c.want)
			}
		}
	})
}

// TestNextSlotIsTheLeaders: the leader publishes each job's next slot and
// the schedule's interval before it; a suspended job, a removed one and a
// job of a process that stopped leading have none (a stale next slot on a
// former leader would read as an overdue job).
func TestNextSlotIsTheLeaders(t *testing.T) {
	db := openDB(t, testenv.DSN(t, "sqlite"))
	p := newProbe()
	h := newHarness(t, db, "a", p, "0 */5 * * * *", time.UTC, minute(12, 1), nil)
	seed(t, db, "a", minute(12, 0))
	want := func(what string, at time.Time, interval time.Duration) {
		t.Helper()
		if got := h.m.nextSlot("a"); !got.at.Equal(at) || got.interval != interval {
			t.Fatalf("%s: next slot %v (interval %v), want %v (interval %v)", what, got.at, got.interval, at, interval)
		}
	}
	_, stop := h.lead(t)
	h.settle(t, 1)
	want("leading", minute(12, 5), 5*time.Minute)

	// While a slot runs, the one after it is the next.
	release := make(chan struct{})
	p.do = func(context.Context, time.Time) error { <-release; return nil }
	h.clock.Step(4 * time.Minute)
	if got := p.next(t); !got.Equal(minute(12, 5)) {
		t.Fatalf("slot %v, want 12:05", got)
	}
	want("running 12:05", minute(12, 10), 5*time.Minute)
	close(release)
	h.settle(t, 1)
	want("after 12:05", minute(12, 10), 5*time.Minute)

	suspended := def(t, "a", "0 */5 * * * *", time.UTC, p)
	suspended.Policy.Suspend = true
	h.set(t, suspended)
	h.settle(t, 0)
	want("suspended", time.Time{}, 0)
	h.set(t, def(t, "a", "0 */5 * * * *", time.UTC, p))
	h.settle(t, 1)
	want("resumed", minute(12, 10), 5*time.Minute)

	h.set(t)
	h.settle(t, 0)
	want("removed", time.Time{}, 0)
	h.set(t, def(t, "a", "0 */5 * * * *", time.UTC, p))
	h.settle(t, 1)
	want("added again", minute(12, 10), 5*time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want("no longer leading", time.Time{}, 0)
}
