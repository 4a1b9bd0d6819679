package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/leasecron/leasecron/pkg/model"
)

// History retention.
//
// The leader prunes each job's finished ledger rows (succeeded or failed)
// whose slot is older than the job's Policy.HistoryRetention, in batches of
// Options.PruneBatch rows, each its own short transaction under the fence,
// so no lock is held for long and a stale leader prunes nothing. Two kinds
// of row are never pruned: the job's last succeeded slot (where a new
// leader's catch-up starts) and running rows (a slot in flight).
//
// A pruned slot leaves no row, and "no row" is what lets a slot run. So each
// batch also records, in job_horizons, the newest slot it removed: the
// job's horizon. A slot at or before the horizon that has no row may have
// run, and the ledger refuses to run it (ErrPruned) — for a leader, `once`
// and `backfill` alike. The horizon is written in the transaction that
// deletes the rows, and a claim reads it after its locking read of the
// slot's row, so a claim racing a prune either finds the row or sees the
// horizon.

// ErrPruned means the slot has no ledger row and is at or before the job's
// horizon: its history was pruned, the ledger cannot tell whether it ran,
// and it is not run again.
var ErrPruned = errors.New("the slot's history was pruned")

// JobHorizon is a job's horizon: the newest slot whose ledger row pruning
// removed, and how many rows it has removed in all.
type JobHorizon struct {
	Job           string    `gorm:"primaryKey;size:64"`
	PrunedThrough time.Time `gorm:"not null"`
	PrunedAt      time.Time `gorm:"not null"`
	PrunedRows    int64     `gorm:"not null;default:0"`
}

// TableName implements gorm's tabler.
func (JobHorizon) TableName() string { return "job_horizons" }

// DefaultHistoryRetention is how long finished ledger rows are kept when
// neither the job nor the controller says: a week, 604,800 rows of a
// per-second job.
const DefaultHistoryRetention = 7 * 24 * time.Hour

// KeepHistory is the Policy.HistoryRetention that keeps every row.
const KeepHistory time.Duration = -1

// DefaultPruneBatch is how many rows one prune transaction removes at most.
const DefaultPruneBatch = 500

// Horizon returns job's horizon: the newest slot whose row was pruned
// (ok is false if none ever was).
func Horizon(ctx context.Context, db *gorm.DB, job string) (h JobHorizon, ok bool, err error) {
	ok, err = takeOne(db.WithContext(ctx).Where("job = ?", job), &h)
	if err != nil {
		return h, false, fmt.Errorf("read the history horizon of %s: %w", job, err)
	}
	h.PrunedThrough = h.PrunedThrough.UTC()
	return h, ok, nil
}

// prunedErr is the ErrPruned of job's slot at or before horizon.
func prunedErr(job string, slot, horizon time.Time) error {
	return fmt.Errorf("%w: %s slot %s has no ledger row and the history through %s was pruned, so the ledger cannot tell whether it ran",
		ErrPruned, job, slot.UTC().Format(time.RFC3339Nano), horizon.UTC().Format(time.RFC3339Nano))
}

// checkHorizon fails with ErrPruned if slot, which has no row, is at or
// before job's horizon. tx must already have read (and, where the dialect
// locks, locked) the slot's row.
func checkHorizon(tx *gorm.DB, job string, slot time.Time) error {
	h, found, err := Horizon(tx.Statement.Context, tx, job)
	if err != nil {
		return err
	}
	if found && !slot.After(h.PrunedThrough) {
		return prunedErr(job, slot, h.PrunedThrough)
	}
	return nil
}

// Prune removes up to n of job's finished rows whose slot is before
// `before`, oldest first, keeping the job's last succeeded slot and every
// running row, and moves the job's horizon to the newest slot removed; one
// short transaction under fence f. It returns how many rows it removed:
// fewer than n means nothing more is due.
func (l *Ledger) Prune(ctx context.Context, f Fence, job string, before time.Time, n int) (int, error) {
	before = before.UTC()
	finished := []string{StatusSucceeded, StatusFailed}
	removed := 0
	err := l.short(ctx, func(tx *gorm.DB) error {
		removed = 0
		if err := checkTerm(tx, f); err != nil {
			return err
		}
		var last []int64
		if err := tx.Model(&JobRun{}).Where("job = ? AND status = ?", job, StatusSucceeded).
			Order("slot DESC").Limit(1).Pluck("id", &last).Error; err != nil {
			return fmt.Errorf("read the last succeeded slot: %w", err)
		}
		q := tx.Model(&JobRun{}).Select("id", "slot").Where("job = ? AND slot < ? AND status IN ?", job, before, finished)
		if len(last) > 0 {
			q = q.Where("id <> ?", last[0])
		}
		var rows []JobRun
		if err := q.Order("slot").Limit(n).Find(&rows).Error; err != nil {
			return fmt.Errorf("read rows to prune: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		// A row taken over since the read (a failed slot claimed again) is
		// running now and stays. The horizon is the newest slot read, so it
		// may name a slot that kept its row: that refuses nothing, as only a
		// slot without a row is refused. Both commit together.
		res := tx.Where("id IN ? AND status IN ?", ids, finished).Delete(&JobRun{})
		if res.Error != nil {
			return fmt.Errorf("delete rows: %w", res.Error)
		}
		if removed = int(res.RowsAffected); removed == 0 {
			return nil
		}
		return l.raiseHorizon(tx, job, rows[len(rows)-1].Slot.UTC(), res.RowsAffected)
	})
	if err != nil {
		return 0, fmt.Errorf("prune the history of %s before %s: %w", job, before.Format(time.RFC3339), err)
	}
	return removed, nil
}

// raiseHorizon moves job's horizon to through (never back) inside tx.
func (l *Ledger) raiseHorizon(tx *gorm.DB, job string, through time.Time, rows int64) error {
	now := l.now().UTC()
	q := tx
	if tx.Dialector.Name() != model.SQLite {
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	var h JobHorizon
	found, err := takeOne(q.Where("job = ?", job), &h)
	if err != nil {
		return fmt.Errorf("read the history horizon: %w", err)
	}
	if !found {
		if err := tx.Create(&JobHorizon{Job: job, PrunedThrough: through, PrunedAt: now, PrunedRows: rows}).Error; err != nil {
			return fmt.Errorf("record the history horizon: %w", err)
		}
		return nil
	}
	if h.PrunedThrough.After(through) {
		through = h.PrunedThrough
	}
	if err := tx.Model(&JobHorizon{}).Where("job = ?", job).Updates(map[string]any{
		"pruned_through": through, "pruned_at": now, "pruned_rows": gorm.Expr("pruned_rows + ?", rows),
	}).Error; err != nil {
		return fmt.Errorf("record the history horizon: %w", err)
	}
	return nil
}

// pruneLoop prunes every job's history while leading: a pass every
// Options.PruneInterval, the first one interval after leadership starts
// (so a new leader's catch-up goes first), timed on the wall clock: the
// retention is counted on Options.Clock, the pauses are housekeeping and
// never wait on a test's clock. A database error ends the pass
// (the next one tries again); a newer term ends leadership.
func (s *Scheduler) pruneLoop(ls *leadState) {
	for {
		t := time.NewTimer(s.opts.PruneInterval)
		select {
		case <-ls.ctx.Done():
			t.Stop()
			return
		case <-ls.drain:
			t.Stop()
			return
		case <-t.C:
		}
		if err := s.prunePass(ls); errors.Is(err, ErrFenced) {
			s.opts.Log.Error("leadership term moved on: stopping", "err", err)
			ls.fail(err)
			return
		} else if err != nil && ls.ctx.Err() == nil {
			s.opts.Log.Warn("pruning the ledger's history failed; trying again next pass", "err", err)
		}
	}
}

// prunePass prunes each job in the set down to its retention, batch by
// batch. After each batch it pauses as long as the batch took, so pruning
// holds the database (SQLite's one writer, most of all) at most half the
// time and slots are never kept waiting behind a backlog.
func (s *Scheduler) prunePass(ls *leadState) error {
	start := s.opts.Clock.Now()
	total, pruned := 0, 0
	defer func() {
		if total > 0 {
			s.opts.Log.Info("pruned the ledger's history", "rows", total, "jobs", pruned, "duration", s.opts.Clock.Since(start))
		}
	}()
	for _, d := range s.Definitions() {
		keep := d.Policy.HistoryRetention
		if keep < 0 {
			continue
		}
		before := start.Add(-keep)
		counted := false
		for {
			t0 := time.Now()
			n, err := s.ledger.Prune(ls.ctx, ls.fence, d.Name, before, s.opts.PruneBatch)
			if err != nil {
				return err
			}
			if n > 0 && !counted {
				pruned, counted = pruned+1, true
			}
			total += n
			if n < s.opts.PruneBatch {
				break
			}
			t := time.NewTimer(time.Since(t0))
			select {
			case <-ls.ctx.Done():
				t.Stop()
				return nil
			case <-ls.drain:
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
	return nil
}

// Pruned returns the slots among slots that the ledger refuses to run
// because their history was pruned (no row, at or before job's horizon),
// and the horizon; none if the job was never pruned. It is what `once` and
// `backfill` check before they run anything.
func Pruned(ctx context.Context, db *gorm.DB, job string, slots []time.Time) (refused []time.Time, horizon time.Time, err error) {
	h, ok, err := Horizon(ctx, db, job)
	if err != nil || !ok {
		return nil, time.Time{}, err
	}
	var kept []time.Time
	if err := db.WithContext(ctx).Model(&JobRun{}).Where("job = ? AND slot <= ?", job, h.PrunedThrough).
		Pluck("slot", &kept).Error; err != nil {
		return nil, time.Time{}, fmt.Errorf("read ledger of %s: %w", job, err)
	}
	for _, s := range slots {
		if !s.After(h.PrunedThrough) && !slices.ContainsFunc(kept, s.Equal) {
			refused = append(refused, s)
		}
	}
	return refused, h.PrunedThrough, nil
}
