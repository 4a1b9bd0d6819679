package jobs

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Status is a snapshot of leadership and recent runs.
type Status struct {
	Terms []LeaderTerm
	Runs  []JobRun
}

// ReadStatus reads every scope's current term and the limit most recent runs.
func ReadStatus(ctx context.Context, db *gorm.DB, limit int) (Status, error) {
	var st Status
	db = db.WithContext(ctx)
	if err := db.Order("scope").Find(&st.Terms).Error; err != nil {
		return st, fmt.Errorf("read leader_terms: %w", err)
	}
	if err := db.Order("slot DESC").Order("job").Limit(limit).Find(&st.Runs).Error; err != nil {
		return st, fmt.Errorf("read job_runs: %w", err)
	}
	return st, nil
}

// Unsucceeded returns the slots of def's schedule in [from, to] that have no
// succeeded row in the ledger: what `verify` reports per job.
func Unsucceeded(ctx context.Context, db *gorm.DB, def Definition, from, to time.Time) ([]time.Time, error) {
	var done []time.Time
	err := db.WithContext(ctx).Model(&JobRun{}).
		Where("job = ? AND status = ? AND slot >= ? AND slot <= ?", def.Name, StatusSucceeded, from.UTC(), to.UTC()).
		Pluck("slot", &done).Error
	if err != nil {
		return nil, fmt.Errorf("read ledger of %s: %w", def.Name, err)
	}
	have := make(map[int64]bool, len(done))
	for _, t := range done {
		have[t.UTC().Unix()] = true
	}
	var missing []time.Time
	for t := def.Schedule.Next(from.Add(-time.Nanosecond)); !t.IsZero() && !t.After(to); t = def.Schedule.Next(t) {
		if !have[t.Unix()] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// FirstSlot returns the earliest slot of job in the ledger.
func FirstSlot(ctx context.Context, db *gorm.DB, job string) (time.Time, bool, error) {
	var runs []JobRun
	if err := db.WithContext(ctx).Where("job = ?", job).Order("slot").Limit(1).Find(&runs).Error; err != nil {
		return time.Time{}, false, fmt.Errorf("read ledger of %s: %w", job, err)
	}
	if len(runs) == 0 {
		return time.Time{}, false, nil
	}
	return runs[0].Slot.UTC(), true, nil
}
