package jobs

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/model"
)

// Run statuses in job_runs.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// JobRun is one slot of one job in the ledger.
type JobRun struct {
	ID         int64     `gorm:"primaryKey;autoIncrement"`
	Job        string    `gorm:"size:64;not null;uniqueIndex:uk_job_runs_job_slot,priority:1"`
	Slot       time.Time `gorm:"not null;uniqueIndex:uk_job_runs_job_slot,priority:2"`
	Status     string    `gorm:"size:16;not null;index"`
	Holder     string    `gorm:"size:255;not null"`
	Fence      int64     `gorm:"not null"`
	Attempts   int       `gorm:"not null;default:0"`
	StartedAt  *time.Time
	FinishedAt *time.Time
	Error      string `gorm:"size:1024"`
}

// TableName implements gorm's tabler.
func (JobRun) TableName() string { return "job_runs" }

// LeaderTerm is the current leadership term of one election scope.
type LeaderTerm struct {
	Scope     string `gorm:"primaryKey;size:191"`
	Term      int64  `gorm:"not null;default:0"`
	Holder    string `gorm:"size:255;not null;default:''"`
	StartedAt *time.Time
}

// TableName implements gorm's tabler.
func (LeaderTerm) TableName() string { return "leader_terms" }

// Migrate creates or adopts the ledger's tables (job_runs, leader_terms,
// job_horizons) and the tables of every definition's work that implements
// Migrator, under the database's migration lock.
func Migrate(ctx context.Context, db *gorm.DB, defs []Definition) error {
	return model.Migrate(ctx, db, func(db *gorm.DB) error {
		if err := model.EnsureTables(db, []any{&JobRun{}, &LeaderTerm{}, &JobHorizon{}}, nil); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, d := range defs {
			m, ok := d.Work.(Migrator)
			if !ok || seen[fmt.Sprintf("%T", m)] {
				continue
			}
			seen[fmt.Sprintf("%T", m)] = true
			if err := m.Migrate(ctx, db); err != nil {
				return fmt.Errorf("job %s: %w", d.Name, err)
			}
		}
		return nil
	})
}
