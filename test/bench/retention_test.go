//go:build bench

package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
)

// Retention: what the ledger holds when a year of a per-minute job and a
// day of a per-second job are already in it, with pruning off and on.
const (
	retentionMinutely = 365 * 24 * 60 // a year of per-minute slots
	retentionSecondly = 24 * 60 * 60  // a day of per-second slots
	retentionTick     = time.Hour     // the per-second job's historyRetention
	retentionWindow   = 30 * time.Second
	retentionLimit    = 10 * time.Minute
)

// benchRetention: the ledger of each dialect is seeded with a year of a
// per-minute job and a day of a per-second job, as a leader without pruning
// leaves it; then a leader runs both jobs for a while without pruning and
// once more with it, and the per-second job's start lag is compared.
func benchRetention(t *testing.T, r *report) {
	var rows [][]string
	for _, d := range testenv.Dialects() {
		rows = append(rows, retentionRows(t, d)...)
	}
	r.add("History retention",
		fmt.Sprintf("The ledger holds %s rows of `minutely` (`0 * * * * *`, a year) and %s of `tick` (`* * * * * *`, a day, "+
			"each slot `UPDATE counters SET n = n + 1`), inserted directly, as a year without pruning leaves it. Then a leader "+
			"(in process: the engine `run` uses, with the prune interval 1 s instead of 5 min) runs both jobs, first with history kept "+
			"forever for %s, then with `minutely` at the default retention (168 h: 10,080 slots) and `tick` at `historyRetention: 1h` "+
			"(3,600 slots), until both are down to their retention and for at least %s. Rows: per job, when the leader starts and when "+
			"it stops. Pruned in: from the start of leadership (the first pass begins 1 s in) until both jobs hold no row older than their "+
			"retention. Start lag of `tick`: `job_runs.started_at` minus the slot's time, over the slots while the leader ran "+
			"(its first 2 s left out), with the slots that fell while pruning was going on counted apart. "+
			"Target: rows bounded by the retention, and the start lag while pruning no worse than without it (p99 under 100 ms).",
			count(retentionMinutely), count(retentionSecondly), retentionWindow, retentionWindow),
		[]string{"database", "history", "rows minutely", "rows tick", "pruned in", "tick start lag", "p99", "slots while pruning: p99 (of)"}, rows)
}

func retentionRows(t *testing.T, dialect string) [][]string {
	ctx := context.Background()
	db := openDB(t, testenv.DSN(t, dialect))
	if err := db.Exec("CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO counters (name, n) VALUES ('tick', 0)").Error; err != nil {
		t.Fatal(err)
	}
	defs := func(prune bool) []jobs.Definition {
		minutely, err := jobs.ParseSchedule("0 * * * * *", time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		secondly, err := jobs.ParseSchedule("* * * * * *", time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		noop := jobs.TxFunc(func(context.Context, *gorm.DB, jobs.Slot) error { return nil })
		tick := jobs.TxFunc(func(ctx context.Context, tx *gorm.DB, _ jobs.Slot) error {
			return tx.WithContext(ctx).Exec("UPDATE counters SET n = n + 1 WHERE name = 'tick'").Error
		})
		keepM, keepT := jobs.KeepHistory, jobs.KeepHistory
		if prune {
			keepM, keepT = 0, retentionTick // 0: the default, 168 h
		}
		return []jobs.Definition{
			{Name: "minutely", Schedule: minutely, Work: noop, Policy: jobs.Policy{HistoryRetention: keepM}},
			{Name: "tick", Schedule: secondly, Work: tick, Policy: jobs.Policy{HistoryRetention: keepT}},
		}
	}
	if err := jobs.Migrate(ctx, db, defs(false)); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Minute)
	seedRows(t, db, "minutely", now.Add(-retentionMinutely*time.Minute), time.Minute, retentionMinutely)
	seedRows(t, db, "tick", now.Add(-retentionSecondly*time.Second), time.Second, retentionSecondly)

	var out [][]string
	for _, prune := range []bool{false, true} {
		res := leadFor(t, db, defs(prune), prune)
		label := "kept forever"
		pruned := "—"
		if prune {
			label = "168 h / 1 h"
			pruned = round(res.prunedIn)
			if res.prunedIn == 0 {
				pruned = fmt.Sprintf("not within %s", retentionLimit)
			}
		}
		while := "—"
		if prune {
			while = fmt.Sprintf("%s (%d)", round(percentile(res.lagPruning, 99)), len(res.lagPruning))
		}
		out = append(out, []string{dialect, label,
			fmt.Sprintf("%s → %s", count(int(res.before["minutely"])), count(int(res.after["minutely"]))),
			fmt.Sprintf("%s → %s", count(int(res.before["tick"])), count(int(res.after["tick"]))),
			pruned, res.lag.cell(), round(percentile(res.lag.samples, 99)), while})
		if n, succeeded := tickCount(t, db); !prune && int64(n)+retentionSecondly != succeeded {
			t.Errorf("%s: the tick counter is %d, but %d slots succeeded: a slot ran twice or not at all", dialect, n, succeeded)
		}
	}
	return out
}

// seedRows inserts n succeeded rows of job, every step from first.
func seedRows(t *testing.T, db *gorm.DB, job string, first time.Time, step time.Duration, n int) {
	t.Helper()
	const batch = 2000
	rows := make([]jobs.JobRun, 0, batch)
	flush := func() {
		if len(rows) == 0 {
			return
		}
		if err := db.Create(&rows).Error; err != nil {
			t.Fatal(err)
		}
		rows = rows[:0]
	}
	for i := range n {
		at := first.Add(time.Duration(i) * step)
		rows = append(rows, jobs.JobRun{Job: job, Slot: at, Status: jobs.StatusSucceeded, Holder: "a-year-ago", Fence: 1, Attempts: 1, StartedAt: &at, FinishedAt: &at})
		if len(rows) == batch {
			flush()
		}
	}
	flush()
}

// tickCount is the tick counter and how many tick rows say succeeded.
func tickCount(t *testing.T, db *gorm.DB) (int, int64) {
	t.Helper()
	var n int
	if err := db.Raw("SELECT n FROM counters WHERE name = 'tick'").Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	var rows int64
	if err := db.Model(&jobs.JobRun{}).Where("job = ? AND status = ?", "tick", jobs.StatusSucceeded).Count(&rows).Error; err != nil {
		t.Fatal(err)
	}
	return n, rows
}

type retentionResult struct {
	before, after map[string]int64
	prunedIn      time.Duration // 0: not done within the limit, or not pruning
	lag           series
	lagPruning    []time.Duration
}

// leadFor leads defs for retentionWindow, and with prune until both jobs
// are down to their retention (at most retentionLimit).
func leadFor(t *testing.T, db *gorm.DB, defs []jobs.Definition, prune bool) retentionResult {
	t.Helper()
	res := retentionResult{before: rowCounts(t, db), after: map[string]int64{}}
	s, err := jobs.New(db, "bench", defs, jobs.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), PruneInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := s.Ledger().BeginTerm(ctx, "bench-retention")
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Lead(ctx, nil, f) }()
	var prunedAt time.Time
	for {
		now := time.Now()
		if prune && prunedAt.IsZero() && downToRetention(t, db, now) {
			prunedAt = now
			res.prunedIn = now.Sub(started)
		}
		if now.Sub(started) >= retentionWindow && (!prune || !prunedAt.IsZero() || now.Sub(started) >= retentionLimit) {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the leader stopped: %v", err)
		case <-time.After(200 * time.Millisecond): // polling the database
		}
	}
	end := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, run := range ledgerRows(t, db, "tick", started.Add(2*time.Second), end) {
		if run.StartedAt == nil {
			continue
		}
		lag := run.StartedAt.Sub(run.Slot)
		res.lag.add(lag, true)
		if prune && (prunedAt.IsZero() || run.Slot.Before(prunedAt)) {
			res.lagPruning = append(res.lagPruning, lag)
		}
	}
	res.after = rowCounts(t, db)
	return res
}

// downToRetention reports whether neither job holds a row older than its
// retention (one row, the last success, may be).
func downToRetention(t *testing.T, db *gorm.DB, now time.Time) bool {
	t.Helper()
	for job, keep := range map[string]time.Duration{"minutely": jobs.DefaultHistoryRetention, "tick": retentionTick} {
		var n int64
		if err := db.Model(&jobs.JobRun{}).Where("job = ? AND slot < ?", job, now.Add(-keep-2*time.Second).UTC()).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return false
		}
	}
	return true
}

func rowCounts(t *testing.T, db *gorm.DB) map[string]int64 {
	t.Helper()
	var rows []struct {
		Job string
		N   int64
	}
	if err := db.Model(&jobs.JobRun{}).Select("job, COUNT(*) AS n").Group("job").Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Job] = r.N
	}
	return out
}

// prunePassJobs is how many jobs benchPrunePass's pass goes through.
const prunePassJobs = 1000

// benchPrunePass: what one prune pass costs the database with 1,000 jobs,
// as the leader's pruner runs it (Ledger.Prune per job, under a term), when
// nothing is due and when each job has one batch due.
func benchPrunePass(t *testing.T, r *report) {
	var rows [][]string
	for _, d := range testenv.Dialects() {
		ctx := context.Background()
		db := openDB(t, testenv.DSN(t, d))
		if err := jobs.Migrate(ctx, db, nil); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Hour)
		for i := range prunePassJobs {
			// 20 hourly rows: 10 older than a 10 h retention, 10 newer.
			seedRows(t, db, fmt.Sprintf("job-%04d", i), now.Add(-20*time.Hour), time.Hour, 20)
		}
		l := jobs.NewLedger(db, "bench")
		f, err := l.BeginTerm(ctx, "bench-prune-pass")
		if err != nil {
			t.Fatal(err)
		}
		pass := func(before time.Time) (time.Duration, int) {
			start, n := time.Now(), 0
			for i := range prunePassJobs {
				k, err := l.Prune(ctx, f, fmt.Sprintf("job-%04d", i), before, jobs.DefaultPruneBatch)
				if err != nil {
					t.Fatal(err)
				}
				n += k
			}
			return time.Since(start), n
		}
		idle, none := pass(now.Add(-30 * time.Hour))
		busy, pruned := pass(now.Add(-10 * time.Hour))
		again, _ := pass(now.Add(-10 * time.Hour))
		if none != 0 || pruned != 10*prunePassJobs {
			t.Fatalf("%s: pruned %d rows with nothing due and %d with 10 per job due, want 0 and %d", d, none, pruned, 10*prunePassJobs)
		}
		rows = append(rows, []string{d, round(idle), round(busy), count(pruned), round(again)})
	}
	r.add("A prune pass over 1,000 jobs",
		fmt.Sprintf("What the leader's pruner costs per pass (every 5 min) with %s jobs: one `Prune` transaction per job (term check under "+
			"the shared lock, the job's last success, up to %d old rows), run one after another as a pass runs them (without the pause "+
			"a pass takes after a full batch). Each job has 20 hourly rows; first a pass with nothing due, then one with the 10 oldest "+
			"of each due, then the same again (nothing left).", count(prunePassJobs), jobs.DefaultPruneBatch),
		[]string{"database", "nothing due", "10 rows due per job", "rows pruned", "again, nothing left"}, rows)
}
