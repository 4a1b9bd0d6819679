package jobs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"
)

// seedRun inserts a finished or running row of job's slot.
func seedRun(t *testing.T, db *gorm.DB, job string, slot time.Time, status string) {
	t.Helper()
	at := slot.UTC()
	r := JobRun{Job: job, Slot: at, Status: status, Holder: "earlier", Fence: 1, Attempts: 1, StartedAt: &at}
	if status != StatusRunning {
		r.FinishedAt = &at
	}
	if err := db.Create(&r).Error; err != nil {
		t.Fatal(err)
	}
}

// TestPruneKeepsWhatCatchUpNeeds: pruning in small batches removes every
// finished row before the cut-off except each job's last succeeded slot,
// keeps running rows and everything after the cut-off, records the newest
// slot removed as the job's horizon, and does nothing under a stale fence.
func TestPruneKeepsWhatCatchUpNeeds(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		l := NewLedger(db, "leader")
		stale, err := l.BeginTerm(ctx, "prune")
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.BeginTerm(ctx, "prune")
		if err != nil {
			t.Fatal(err)
		}
		cut := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
		// "healthy": 60 minutes of successes before the cut, one failure and
		// one row still running among them, 10 minutes after it.
		for i := -60; i < 10; i++ {
			status := StatusSucceeded
			switch i {
			case -30:
				status = StatusFailed
			case -20:
				status = StatusRunning
			}
			seedRun(t, db, "healthy", cut.Add(time.Duration(i)*time.Minute), status)
		}
		// "broken": its last success is long before the cut, failures since.
		lastOK := cut.Add(-48 * time.Hour)
		seedRun(t, db, "broken", lastOK.Add(-time.Hour), StatusSucceeded)
		seedRun(t, db, "broken", lastOK, StatusSucceeded)
		for i := 1; i <= 5; i++ {
			seedRun(t, db, "broken", cut.Add(time.Duration(-i)*time.Hour), StatusFailed)
		}

		if _, err := l.Prune(ctx, stale, "healthy", cut, 7); !errors.Is(err, ErrFenced) {
			t.Fatalf("prune under a stale fence = %v, want ErrFenced", err)
		}
		if n := len(runs(t, db, "healthy")); n != 70 {
			t.Fatalf("a fenced prune removed rows: %d left of 70", n)
		}

		drain := func(job string) int {
			total := 0
			for batches := 0; ; batches++ {
				n, err := l.Prune(ctx, f, job, cut, 7)
				if err != nil {
					t.Fatal(err)
				}
				if n > 7 {
					t.Fatalf("one batch removed %d rows, more than its 7", n)
				}
				total += n
				if n < 7 {
					return total
				}
				if batches > 100 {
					t.Fatal("pruning never ended")
				}
			}
		}
		if n := drain("healthy"); n != 59 { // 60 before the cut, less the running one
			t.Errorf("pruned %d rows of healthy, want 59", n)
		}
		left := runs(t, db, "healthy")
		if len(left) != 11 || left[0].Status != StatusRunning || !left[0].Slot.Equal(cut.Add(-20*time.Minute)) {
			t.Fatalf("healthy kept %d rows starting %s %s; want the running row and the 10 after the cut", len(left), left[0].Slot, left[0].Status)
		}
		h, ok, err := Horizon(ctx, db, "healthy")
		if err != nil || !ok || !h.PrunedThrough.Equal(cut.Add(-time.Minute)) || h.PrunedRows != 59 {
			t.Errorf("healthy's horizon = %+v, %v, %v; want through %s, 59 rows", h, ok, err, cut.Add(-time.Minute))
		}

		if n := drain("broken"); n != 6 {
			t.Errorf("pruned %d rows of broken, want 6 (all but the last success)", n)
		}
		left = runs(t, db, "broken")
		if len(left) != 1 || !left[0].Slot.Equal(lastOK) || left[0].Status != StatusSucceeded {
			t.Fatalf("broken kept %v, want only its last success at %s", left, lastOK)
		}
		last, _, err := l.LastSucceeded(ctx, "broken")
		if err != nil || !last.Equal(lastOK) {
			t.Errorf("broken's last success after pruning = %s, %v; want %s (where catch-up starts)", last, err, lastOK)
		}
		if h, _, _ := Horizon(ctx, db, "broken"); !h.PrunedThrough.Equal(cut.Add(-time.Hour)) {
			t.Errorf("broken's horizon = %s, want %s", h.PrunedThrough, cut.Add(-time.Hour))
		}
	})
}

// countingJob is work outside the database that counts its runs: not
// idempotent, so a second run of a slot shows.
type countingJob struct{ n atomic.Int32 }

func (c *countingJob) Run(context.Context, Slot) error { c.n.Add(1); return nil }

// TestPrunedSlotIsNotRunAgain: once a slot's row is pruned, running the
// slot again (once, backfill, a leader) is refused with ErrPruned and its
// work does not run a second time, in the database or outside it; slots
// after the horizon still run, in a batch and one by one.
func TestPrunedSlotIsNotRunAgain(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		counterTable(t, db, "tx")
		tx := def(t, "tx", "0 * * * *", time.UTC, TxFunc(func(_ context.Context, db *gorm.DB, _ Slot) error { return increment(db, "tx") }))
		ext := &countingJob{}
		out := def(t, "ext", "0 * * * *", time.UTC, ext)
		batch := def(t, "batch", "50 0 0 * * *", time.UTC, stampJob{})
		s, err := New(db, "manual", []Definition{tx, out, batch}, Options{Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		l := s.Ledger()
		f, err := l.BeginTerm(ctx, "prune")
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for _, name := range []string{"tx", "ext"} {
			for h := range 3 {
				if o, err := s.RunSlot(ctx, Fence{}, name, first.Add(time.Duration(h)*time.Hour), deadline); err != nil || o != Succeeded {
					t.Fatalf("%s slot %d = %s, %v", name, h, o, err)
				}
			}
			// Everything before the last slot goes; the last success stays.
			if n, err := l.Prune(ctx, f, name, first.Add(3*time.Hour), 100); err != nil || n != 2 {
				t.Fatalf("prune %s = %d, %v; want 2 rows", name, n, err)
			}
			for _, fence := range []Fence{{}, f} {
				o, err := s.RunSlot(ctx, fence, name, first, deadline)
				if !errors.Is(err, ErrPruned) || o != Failed {
					t.Errorf("%s: running a pruned slot again (term %d) = %s, %v; want ErrPruned", name, fence.Term, o, err)
				}
			}
			if o, err := s.RunSlot(ctx, Fence{}, name, first.Add(2*time.Hour), deadline); err != nil || o != Skipped {
				t.Errorf("%s: the kept last success = %s, %v; want skipped", name, o, err)
			}
			if o, err := s.RunSlot(ctx, Fence{}, name, first.Add(4*time.Hour), deadline); err != nil || o != Succeeded {
				t.Errorf("%s: a slot after the horizon = %s, %v; want succeeded", name, o, err)
			}
			if rs := runs(t, db, name); len(rs) != 2 {
				t.Errorf("%s has %d ledger rows, want 2: a refused slot writes none", name, len(rs))
			}
		}
		if n := counter(t, db, "tx"); n != 4 {
			t.Errorf("tx's counter = %d, want 4 (3 slots, 1 after the horizon; the pruned one not again)", n)
		}
		if n := ext.n.Load(); n != 4 {
			t.Errorf("ext ran %d times, want 4", n)
		}

		// A backfill over the horizon: the batch is refused as a whole, the
		// slots after the horizon run one by one.
		day := time.Date(2026, 1, 1, 0, 0, 50, 0, time.UTC)
		var slots []time.Time
		for i := range 10 {
			slots = append(slots, day.AddDate(0, 0, i))
		}
		if c, err := s.RunSlots(ctx, Fence{}, "batch", slots[:5], deadline); err != nil || c[Succeeded] != 5 {
			t.Fatalf("first backfill = %v, %v", c, err)
		}
		if n, err := l.Prune(ctx, f, "batch", slots[4], 100); err != nil || n != 4 {
			t.Fatalf("prune batch = %d, %v; want 4", n, err)
		}
		c, err := s.RunSlots(ctx, Fence{}, "batch", slots, deadline)
		if err != nil || c[Failed] != 4 || c[Skipped] != 1 || c[Succeeded] != 5 {
			t.Errorf("backfill over the horizon = %v, %v; want 4 refused, 1 skipped, 5 succeeded", c, err)
		}
		var stamped int64
		if err := db.Model(&stamp{}).Where("job = ?", "batch").Count(&stamped).Error; err != nil {
			t.Fatal(err)
		}
		if stamped != 10 {
			t.Errorf("batch stamped %d dates, want 10", stamped)
		}
	})
}

// TestLeaderPrunesWhileSlotsRun: the leader prunes a backlog down to the
// job's retention in batches while its per-second slots keep succeeding;
// a job that keeps its history is left alone.
func TestLeaderPrunesWhileSlotsRun(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		counterTable(t, db, "tick")
		tick := def(t, "tick", "* * * * * *", time.UTC, TxFunc(func(_ context.Context, db *gorm.DB, _ Slot) error { return increment(db, "tick") }))
		tick.Policy.HistoryRetention = time.Hour
		kept := def(t, "kept", "@daily", time.UTC, stampJob{})
		kept.Policy.HistoryRetention = KeepHistory
		old := time.Now().UTC().Truncate(time.Second).Add(-3 * time.Hour)
		var backlog []JobRun
		for i := range 1500 {
			at := old.Add(time.Duration(i) * time.Second)
			backlog = append(backlog, JobRun{Job: "tick", Slot: at, Status: StatusSucceeded, Holder: "earlier", Fence: 1, Attempts: 1, StartedAt: &at, FinishedAt: &at})
		}
		if err := db.CreateInBatches(backlog, 200).Error; err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			seed(t, db, "kept", old.AddDate(0, 0, -i))
		}
		s, err := New(db, "leader", []Definition{tick, kept}, Options{
			Log: quietLog(), PruneInterval: 20 * time.Millisecond, PruneBatch: 100, Defaults: Policy{CatchUpLimit: -1},
		})
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.Ledger().BeginTerm(ctx, "prune")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Lead(ctx, nil, f) }()
		limit := time.Now().Add(30 * time.Second)
		for {
			var n int64
			if err := db.Model(&JobRun{}).Where("job = ? AND slot < ?", "tick", old.Add(2*time.Hour)).Count(&n).Error; err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(limit) {
				t.Fatalf("%d rows of the backlog are left after 30 s", n)
			}
			time.Sleep(20 * time.Millisecond) // polling the database, not waiting for an event
		}
		// Slots went on while pruning: wait for two more to succeed.
		start := counter(t, db, "tick")
		for counter(t, db, "tick") < start+2 {
			if time.Now().After(limit.Add(10 * time.Second)) {
				t.Fatal("no slot succeeded after pruning")
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if rs := runs(t, db, "kept"); len(rs) != 3 {
			t.Errorf("kept has %d rows, want its 3: KeepHistory prunes nothing", len(rs))
		}
		var succeeded int64
		if err := db.Model(&JobRun{}).Where("job = ? AND status = ?", "tick", StatusSucceeded).Count(&succeeded).Error; err != nil {
			t.Fatal(err)
		}
		if n := counter(t, db, "tick"); int64(n) != succeeded {
			t.Errorf("tick's counter %d != its %d succeeded rows: every slot since leadership is kept", n, succeeded)
		}
		if h, ok, err := Horizon(context.Background(), db, "tick"); err != nil || !ok || h.PrunedRows != 1500 {
			t.Errorf("tick's horizon = %+v, %v, %v; want 1500 rows pruned", h, ok, err)
		}
	})
}
