package jobs

import (
	"context"
	"testing"
	"time"

	"gorm.io/gorm"
)

// TestRunSlotsBatches: a backfill of more than one batch writes every date
// once, skips what is done, and a batch that meets a failed row falls back to
// the slot-by-slot path, which retries that slot.
func TestRunSlotsBatches(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		job := def(t, "stamp", "50 0 0 * * *", time.UTC, stampJob{})
		s, err := New(db, "backfill", []Definition{job}, Options{
			Log: quietLog(), Defaults: Policy{RetryInitial: time.Millisecond, RetryMax: time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		first := time.Date(2020, 1, 1, 0, 0, 50, 0, time.UTC)
		var slots []time.Time
		for i := 0; i < BatchSize+50; i++ {
			slots = append(slots, first.AddDate(0, 0, i))
		}
		seed(t, db, job.Name, slots[3]) // done before: skipped
		failedAt := slots[BatchSize+10] // failed before: the second batch falls back
		now := failedAt
		if err := db.Create(&JobRun{Job: job.Name, Slot: failedAt, Status: StatusFailed, Holder: "earlier", Attempts: 1, StartedAt: &now, FinishedAt: &now, Error: "boom"}).Error; err != nil {
			t.Fatal(err)
		}

		counts, err := s.RunSlots(ctx, Fence{}, job.Name, slots, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if counts[Succeeded] != len(slots)-1 || counts[Skipped] != 1 || counts[Failed] != 0 {
			t.Fatalf("outcomes %v, want %d succeeded and 1 skipped", counts, len(slots)-1)
		}
		rs := runs(t, db, job.Name)
		if len(rs) != len(slots) {
			t.Fatalf("ledger has %d rows, want %d", len(rs), len(slots))
		}
		for i, r := range rs {
			if !r.Slot.Equal(slots[i]) || r.Status != StatusSucceeded {
				t.Fatalf("ledger row %d = %s %s, want %s succeeded", i, r.Slot, r.Status, slots[i])
			}
			if r.Slot.Equal(failedAt) && r.Attempts != 2 {
				t.Errorf("the failed slot was retried with %d attempts in all, want 2", r.Attempts)
			}
		}
		var n, dates int64
		if err := db.Model(&stamp{}).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Model(&stamp{}).Distinct("date").Count(&dates).Error; err != nil {
			t.Fatal(err)
		}
		// The seeded slot wrote no rows: only its ledger row exists.
		if n != int64(len(slots)-1) || dates != n {
			t.Errorf("stamps has %d rows for %d dates, want %d", n, dates, len(slots)-1)
		}

		again, err := s.RunSlots(ctx, Fence{}, job.Name, slots, time.Now().Add(time.Minute))
		if err != nil || again[Skipped] != len(slots) {
			t.Fatalf("second run = %v, %v; want every slot skipped", again, err)
		}
	})
}
