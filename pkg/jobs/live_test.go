package jobs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"gorm.io/gorm"
)

// settle waits until every job loop has acted on the last change and the
// scheduler waits on n timers (a suspended job waits on none).
func (h *harness) settle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		h.sched.mu.Lock()
		acted := h.sched.lead != nil
		if acted {
			for _, jl := range h.sched.lead.loops {
				jl.mu.Lock()
				acted = acted && jl.seen == jl.gen
				jl.mu.Unlock()
			}
		}
		h.sched.mu.Unlock()
		if acted && h.clock.Waiters() == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("scheduler never settled on %d timers (has %d)", n, h.clock.Waiters())
		}
		time.Sleep(time.Millisecond) // polling a condition, not standing in for it
	}
}

// set replaces the harness's job set.
func (h *harness) set(t *testing.T, defs ...Definition) {
	t.Helper()
	if err := h.sched.Set(defs); err != nil {
		t.Fatal(err)
	}
}

// ranSlots returns the succeeded slots of job in the ledger, oldest first.
func ranSlots(t *testing.T, db *gorm.DB, job string) []time.Time {
	t.Helper()
	var out []time.Time
	for _, r := range runs(t, db, job) {
		if r.Status == StatusSucceeded && r.Holder == "leader" {
			out = append(out, r.Slot.UTC())
		}
	}
	return out
}

func sameSlots(got []time.Time, want ...time.Time) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			return false
		}
	}
	return true
}

// The job set changes while leading: a new job starts from the change (its
// slot before the change is not run), a changed schedule starts from the
// change (no slot the old schedule never had is replayed), a removed job
// runs no further slot, and one added again starts from that change.
func TestLiveChanges(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		start := minute(12, 0).Add(30 * time.Second)
		a := newProbe()
		h := newHarness(t, db, "a", a, "0 * * * * *", time.UTC, start, nil)
		seed(t, db, "a", minute(12, 0))
		_, stop := h.lead(t)
		h.settle(t, 1)

		// Add b (every minute at :00), and change a to every minute at :15:
		// its 12:00:15 comes after a's last success but before the change,
		// so it is not run.
		b := newProbe()
		h.set(t, def(t, "a", "15 * * * * *", time.UTC, a), def(t, "b", "0 * * * * *", time.UTC, b))
		h.settle(t, 2)
		h.clock.Step(30 * time.Second) // 12:01:00
		if got := b.next(t); !got.Equal(minute(12, 1)) {
			t.Fatalf("new job's first slot %s, want 12:01 (the first after it was added)", got)
		}
		h.settle(t, 2)
		h.clock.Step(15 * time.Second) // 12:01:15
		if got := a.next(t); !got.Equal(minute(12, 1).Add(15 * time.Second)) {
			t.Fatalf("changed job's first slot %s, want 12:01:15 (its 12:00:15 came before the change)", got)
		}
		h.settle(t, 2)

		// Remove a: it runs nothing more; b goes on.
		h.set(t, def(t, "b", "0 * * * * *", time.UTC, b))
		h.settle(t, 1)
		h.clock.Step(45 * time.Second) // 12:02:00
		if got := b.next(t); !got.Equal(minute(12, 2)) {
			t.Fatalf("b's slot %s, want 12:02", got)
		}
		h.settle(t, 1)
		h.clock.Step(time.Minute) // 12:03:00; a's 12:02:15 passed while removed
		if got := b.next(t); !got.Equal(minute(12, 3)) {
			t.Fatalf("b's slot %s, want 12:03", got)
		}
		h.settle(t, 1)

		// Add a again: it starts from now, without its 12:02:15.
		h.set(t, def(t, "a", "15 * * * * *", time.UTC, a), def(t, "b", "0 * * * * *", time.UTC, b))
		h.settle(t, 2)
		h.clock.Step(15 * time.Second) // 12:03:15
		if got := a.next(t); !got.Equal(minute(12, 3).Add(15 * time.Second)) {
			t.Fatalf("re-added job's slot %s, want 12:03:15", got)
		}
		h.settle(t, 2)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := ranSlots(t, db, "a"); !sameSlots(got, minute(12, 1).Add(15*time.Second), minute(12, 3).Add(15*time.Second)) {
			t.Errorf("a ran %v", got)
		}
		if got := ranSlots(t, db, "b"); !sameSlots(got, minute(12, 1), minute(12, 2), minute(12, 3)) {
			t.Errorf("b ran %v", got)
		}
	})
}

// Suspend stops new slots; on resume the slots that passed are reported as
// missed and not caught up.
func TestSuspendAndResume(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		a := newProbe()
		h := newHarness(t, db, "a", a, "0 * * * * *", time.UTC, minute(12, 0).Add(30*time.Second), nil)
		seed(t, db, "a", minute(12, 0))
		_, stop := h.lead(t)
		h.settle(t, 1)
		suspended := def(t, "a", "0 * * * * *", time.UTC, a)
		suspended.Policy.Suspend = true
		h.set(t, suspended)
		h.settle(t, 0)
		h.clock.Step(3 * time.Minute) // 12:03:30: 12:01, 12:02 and 12:03 pass
		h.set(t, def(t, "a", "0 * * * * *", time.UTC, a))
		h.settle(t, 1)
		if n := len(a.started); n != 0 {
			t.Fatalf("a suspended job ran %d slots", n)
		}
		if got := h.m.get("missed/a"); got != 3 {
			t.Errorf("missed = %v, want 3", got)
		}
		h.clock.Step(30 * time.Second)
		if got := a.next(t); !got.Equal(minute(12, 4)) {
			t.Fatalf("first slot after resume %s, want 12:04", got)
		}
		h.settle(t, 1)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// A change while a slot runs lets the slot finish under the definition it
// started with, and the slot is not run again under the new one.
func TestChangeDuringRunningSlot(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		a := newProbe()
		gate := make(chan struct{})
		a.do = func(ctx context.Context, slot time.Time) error {
			if slot.Equal(minute(12, 1)) {
				<-gate
			}
			return nil
		}
		h := newHarness(t, db, "a", a, "0 * * * * *", time.UTC, minute(12, 0).Add(30*time.Second), nil)
		seed(t, db, "a", minute(12, 0))
		_, stop := h.lead(t)
		h.settle(t, 1)
		h.clock.Step(30 * time.Second)
		if got := a.next(t); !got.Equal(minute(12, 1)) {
			t.Fatalf("slot %s", got)
		}
		changed := def(t, "a", "0 * * * * *", time.UTC, a)
		changed.Revision = "v2"
		changed.Policy.Timeout = time.Hour
		h.set(t, changed)
		close(gate)
		h.settle(t, 1)
		h.clock.Step(time.Minute)
		if got := a.next(t); !got.Equal(minute(12, 2)) {
			t.Fatalf("slot after the change %s, want 12:02", got)
		}
		h.settle(t, 1)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := ranSlots(t, db, "a"); !sameSlots(got, minute(12, 1), minute(12, 2)) {
			t.Errorf("a ran %v, want 12:01 and 12:02 once each", got)
		}
		for _, r := range runs(t, db, "a") {
			if r.Attempts != 1 {
				t.Errorf("slot %s took %d attempts, want 1", r.Slot, r.Attempts)
			}
		}
	})
}

// Different jobs run side by side: one whose slot is still running does not
// hold up another's. Work outside the database runs beside anything; work
// in the ledger's transaction does on MariaDB and PostgreSQL, while SQLite,
// with one writer at a time, runs such work one job at a time.
func TestJobsRunSideBySide(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		for _, inTx := range []bool{false, true} {
			if inTx && db.Dialector.Name() == "sqlite" {
				continue
			}
			t.Run(map[bool]string{false: "outside", true: "in the transaction"}[inTx], func(t *testing.T) {
				slow, fast := newProbe(), newProbe()
				gate := make(chan struct{})
				slow.do = func(ctx context.Context, _ time.Time) error {
					select {
					case <-gate:
					case <-ctx.Done():
					}
					return nil
				}
				var slowWork any = Func(func(ctx context.Context, s Slot) error { return slow.RunTx(ctx, nil, s) })
				if inTx {
					slowWork = slow
				}
				name := map[bool]string{false: "slow-ext", true: "slow-tx"}[inTx]
				h := newHarness(t, db, name, slowWork, "0 * * * * *", time.UTC, minute(12, 0).Add(30*time.Second), nil)
				seed(t, db, name, minute(12, 0))
				seed(t, db, name+"-fast", minute(12, 0))
				h.set(t, def(t, name, "0 * * * * *", time.UTC, slowWork), def(t, name+"-fast", "0 * * * * *", time.UTC, fast))
				_, stop := h.lead(t)
				h.settle(t, 2)
				h.clock.Step(30 * time.Second)
				slow.next(t)
				if got := fast.next(t); !got.Equal(minute(12, 1)) {
					t.Fatalf("fast slot %s", got)
				}
				h.settle(t, 1) // fast waits for 12:02 while slow still runs 12:01
				h.clock.Step(time.Minute)
				if got := fast.next(t); !got.Equal(minute(12, 2)) {
					t.Fatalf("fast slot %s while slow runs, want 12:02", got)
				}
				close(gate)
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
}

// Set refuses a bad job set as a whole: the running set stays.
func TestSetRefusesBadSets(t *testing.T) {
	db := openDB(t, testenv.DSN(t, "sqlite"))
	good := def(t, "a", "@daily", time.UTC, stampJob{})
	s, err := New(db, "x", []Definition{good}, Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		defs []Definition
		want string
	}{
		{"twice", []Definition{good, good}, "job a is defined twice"},
		{"no name", []Definition{{Schedule: good.Schedule, Work: stampJob{}}}, "Name is empty"},
		{"no schedule", []Definition{{Name: "b", Work: stampJob{}}}, "job b: Schedule is nil"},
		{"no work", []Definition{{Name: "b", Schedule: good.Schedule, Work: 42}}, "job b: Work (int) is neither a jobs.TxJob nor a jobs.Job"},
	} {
		if err := s.Set(tc.defs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Set = %v, want %q", tc.name, err, tc.want)
		}
	}
	if defs := s.Definitions(); len(defs) != 1 || defs[0].Name != "a" {
		t.Errorf("after refused sets the scheduler runs %v, want a alone", defs)
	}
}

// Trigger runs an extra slot through the job's own loop and the ledger:
// once (a second trigger of the same slot is skipped), even while the job
// is suspended, and not at all on a process that does not lead.
func TestTriggerRunsOneSlotThroughTheLedger(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		h := newHarness(t, db, p.Name(), p, "0 0 0 * * *", time.UTC, minute(12, 0), nil)
		seed(t, db, p.Name(), minute(0, 0)) // today's slot ran: nothing to catch up
		if err := h.sched.Trigger(p.Name(), minute(12, 0)); !errors.Is(err, ErrNotLeading) {
			t.Fatalf("Trigger before leading = %v, want ErrNotLeading", err)
		}
		_, stop := h.lead(t)
		awaitWaiting(t, h.clock)
		extra := minute(12, 0).Add(7 * time.Second) // not a slot of the schedule
		if err := h.sched.Trigger(p.Name(), extra); err != nil {
			t.Fatal(err)
		}
		if got := p.next(t); !got.Equal(extra) {
			t.Fatalf("triggered slot = %s, want %s", got, extra)
		}
		if err := h.sched.Trigger("nope", extra); err == nil {
			t.Fatal("Trigger of an unknown job succeeded")
		}
		// Suspended: a trigger still runs; the same slot again is skipped.
		d := def(t, p.Name(), "0 0 0 * * *", time.UTC, p)
		d.Policy.Suspend = true
		if err := h.sched.Set([]Definition{d}); err != nil {
			t.Fatal(err)
		}
		second := extra.Add(time.Minute)
		for _, slot := range []time.Time{extra, second} {
			if err := h.sched.Trigger(p.Name(), slot); err != nil {
				t.Fatal(err)
			}
		}
		if got := p.next(t); !got.Equal(second) {
			t.Fatalf("after a repeated trigger the job ran %s, want only %s", got, second)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		rs := runs(t, db, p.Name())
		if len(rs) != 3 || !rs[1].Slot.Equal(extra) || !rs[2].Slot.Equal(second) || rs[1].Status != StatusSucceeded || rs[2].Status != StatusSucceeded {
			t.Fatalf("ledger = %+v, want the seeded slot and the two triggered ones, succeeded", rs)
		}
		if n := len(p.started); n != 0 {
			t.Fatalf("%d more slots ran", n)
		}
	})
}

// A job removed while its slot waits to retry a failed attempt is not
// retried: the slot ends at once as failed, and the job's loop stops.
func TestRemovedJobIsNotRetried(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		a := newProbe()
		a.do = func(context.Context, time.Time) error { return errors.New("boom") }
		h := newHarness(t, db, "a", a, "0 * * * * *", time.UTC, minute(12, 0).Add(30*time.Second), nil)
		seed(t, db, "a", minute(12, 0))
		h.lead(t)
		h.settle(t, 1)
		h.clock.Step(30 * time.Second)
		if got := a.next(t); !got.Equal(minute(12, 1)) {
			t.Fatalf("slot %s", got)
		}
		h.settle(t, 1) // the backoff before the second attempt
		h.set(t)
		h.clock.Step(time.Millisecond)
		deadline := time.Now().Add(20 * time.Second)
		for {
			h.sched.mu.Lock()
			left := len(h.sched.lead.loops)
			h.sched.mu.Unlock()
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the removed job's loop is still running")
			}
			time.Sleep(time.Millisecond) // polling a condition, not standing in for it
		}
		select {
		case s := <-a.started:
			t.Fatalf("the removed job's slot %s was attempted again", s)
		default:
		}
		rs := runs(t, db, "a")
		if last := rs[len(rs)-1]; !last.Slot.Equal(minute(12, 1)) || last.Status != StatusFailed || last.Attempts != 1 {
			t.Errorf("the slot's row is %s %s after %d attempts, want 12:01 failed after 1", last.Slot, last.Status, last.Attempts)
		}
	})
}
