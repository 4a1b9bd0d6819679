package jobs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/model"
)

func TestBeginTermIsMonotonic(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		l := NewLedger(db, "a")
		var last int64
		for i := 0; i < 3; i++ {
			f, err := l.BeginTerm(ctx, "scope")
			if err != nil {
				t.Fatal(err)
			}
			if f.Term <= last {
				t.Fatalf("term %d after %d: not increasing", f.Term, last)
			}
			last = f.Term
		}
		other, err := l.BeginTerm(ctx, "another-scope")
		if err != nil || other.Term != 1 {
			t.Fatalf("a new scope starts at term 1, got %d (%v)", other.Term, err)
		}
	})
}

// A leader frozen past its lease wakes up and tries to finish a slot it
// claimed: the newer term must win, and nothing of the old leader's commits.
func TestStaleFenceLoses(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		job := def(t, "stamp", "50 0 0 * * *", time.UTC, stampJob{})
		slot := time.Date(2026, 11, 24, 0, 0, 50, 0, time.UTC)
		work := func(tx *gorm.DB) error { return stampJob{}.RunTx(ctx, tx, slotOf(job, slot, 1, Fence{})) }
		date := model.DateOf(slot)
		old, cur := NewLedger(db, "old"), NewLedger(db, "new")

		oldFence, err := old.BeginTerm(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if done, err := old.Claim(ctx, oldFence, job.Name, slot); err != nil || done {
			t.Fatalf("old Claim = %v, %v", done, err)
		}
		newFence, err := cur.BeginTerm(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		err = old.Complete(ctx, oldFence, job.Name, slot, work)
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("stale Complete = %v, want ErrFenced", err)
		}
		if n := stamps(t, db, date); n != 0 {
			t.Fatalf("stale leader committed %d rows", n)
		}
		if _, err := old.Claim(ctx, oldFence, job.Name, slot.Add(time.Hour)); !errors.Is(err, ErrFenced) {
			t.Fatalf("stale Claim = %v, want ErrFenced", err)
		}

		// The new leader takes over the running row of the older fence.
		if done, err := cur.Claim(ctx, newFence, job.Name, slot); err != nil || done {
			t.Fatalf("new Claim = %v, %v", done, err)
		}
		if err := cur.Complete(ctx, newFence, job.Name, slot, work); err != nil {
			t.Fatal(err)
		}
		rs := runs(t, db, job.Name)
		if len(rs) != 1 || rs[0].Status != StatusSucceeded || rs[0].Fence != newFence.Term || rs[0].Holder != "new" || rs[0].Attempts != 2 {
			t.Fatalf("ledger = %+v, want one succeeded row of the new fence after 2 attempts", rs)
		}
		// Done is done: a further claim, by anyone, skips.
		if done, err := cur.Claim(ctx, newFence, job.Name, slot); err != nil || !done {
			t.Fatalf("Claim of a succeeded slot = %v, %v; want done", done, err)
		}
		if done, err := NewLedger(db, "manual").Claim(ctx, Fence{}, job.Name, slot); err != nil || !done {
			t.Fatalf("manual Claim of a succeeded slot = %v, %v; want done", done, err)
		}
	})
}

func TestClaimRespectsRunningNewerFence(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		slot := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		a := NewLedger(db, "a")
		fa, _ := a.BeginTerm(ctx, "s")
		if _, err := a.Claim(ctx, fa, "j", slot); err != nil {
			t.Fatal(err)
		}
		// A manual run must not take over a slot a leader is running.
		if _, err := NewLedger(db, "manual").Claim(ctx, Fence{}, "j", slot); !errors.Is(err, ErrSlotBusy) {
			t.Fatalf("manual Claim of a running slot = %v, want ErrSlotBusy", err)
		}
	})
}

func TestFailedAttemptRollsBackAndIsRecorded(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		slot := time.Date(2026, 2, 1, 0, 0, 50, 0, time.UTC)
		l := NewLedger(db, "a")
		f, _ := l.BeginTerm(ctx, "s")
		job := def(t, "stamp", "50 0 0 * * *", time.UTC, stampJob{})
		if _, err := l.Claim(ctx, f, job.Name, slot); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err := l.Complete(ctx, f, job.Name, slot, func(tx *gorm.DB) error {
			if err := (stampJob{}).RunTx(ctx, tx, slotOf(job, slot, 1, f)); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Complete = %v, want boom", err)
		}
		if err := l.Fail(ctx, f, job.Name, slot, slot, err); err != nil {
			t.Fatal(err)
		}
		if n := stamps(t, db, model.DateOf(slot)); n != 0 {
			t.Fatalf("failed attempt left %d rows", n)
		}
		rs := runs(t, db, job.Name)
		if len(rs) != 1 || rs[0].Status != StatusFailed || rs[0].Error == "" {
			t.Fatalf("ledger = %+v, want one failed row with its error", rs)
		}
	})
}

// A long failure text of multi-byte characters is cut at a character
// boundary, so MariaDB and PostgreSQL accept it and the row says failed.
func TestFailRecordsLongUTF8Text(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		slot := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
		l := NewLedger(db, "a")
		f, _ := l.BeginTerm(ctx, "s")
		if _, err := l.Claim(ctx, f, "j", slot); err != nil {
			t.Fatal(err)
		}
		msg := "x" + strings.Repeat("ü", 600) + "\x00"
		if err := l.Fail(ctx, f, "j", slot, slot, errors.New(msg)); err != nil {
			t.Fatal(err)
		}
		rs := runs(t, db, "j")
		if len(rs) != 1 || rs[0].Status != StatusFailed || len(rs[0].Error) > MaxErrorLen || !utf8.ValidString(rs[0].Error) || !strings.HasPrefix(rs[0].Error, "xü") {
			t.Fatalf("ledger = %+v, want a failed row with valid, cut text", rs)
		}
	})
}
