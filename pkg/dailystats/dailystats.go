// Package dailystats is the dailyStats job kind: the work of the application
// leasecron replaced. For each slot it inserts the slot's date, in the job's
// zone, into four statistics tables with zero counts, skipping any table that
// already holds the date (insert-if-absent on the unique date key), inside
// the ledger's transaction: its effect happens exactly once per slot.
//
// The four tables keep the names and columns of that application, so an
// existing database is adopted as it is: Migrate creates what is missing and
// adds the unique key on date, but never rewrites a column or a row, and
// refuses (DuplicateDatesError) while a table holds a date twice. Verify and
// Dedupe find and merge such dates.
package dailystats

import (
	"context"
	"fmt"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

// Name is the name of the built-in job: `--schedule daily-stats=EXPR` and
// the chart's schedules define it.
const Name = "daily-stats"

// KindName is the kind's name in a job spec.
const KindName = "dailyStats"

// DefaultSchedule is the built-in job's schedule: 00:00:50 every day.
const DefaultSchedule = "50 0 0 * * *"

// Job is the dailyStats work. It implements jobs.TxJob, jobs.BatchTxJob and
// jobs.Migrator.
type Job struct{}

// RunTx implements jobs.TxJob.
func (j Job) RunTx(ctx context.Context, tx *gorm.DB, slot jobs.Slot) error {
	return j.RunTxBatch(ctx, tx, []jobs.Slot{slot})
}

// RunTxBatch implements jobs.BatchTxJob: one insert-if-absent statement per
// table for all the slots' dates.
func (Job) RunTxBatch(ctx context.Context, tx *gorm.DB, slots []jobs.Slot) error {
	var dates []model.Date
	for _, s := range slots {
		if !slices.Contains(dates, s.Date) {
			dates = append(dates, s.Date)
		}
	}
	zero := 0
	var (
		contribute = make([]Contribute, len(dates))
		visits     = make([]VisitStatistics, len(dates))
		likes      = make([]LikeStatistics, len(dates))
		comments   = make([]CommentStatistics, len(dates))
	)
	for i, d := range dates {
		contribute[i] = Contribute{Date: d, ContributeCounts: &zero}
		visits[i] = VisitStatistics{Date: d, Times: &zero}
		likes[i] = LikeStatistics{Date: d, Times: &zero}
		comments[i] = CommentStatistics{Date: d, Times: &zero}
	}
	ifAbsent := clause.OnConflict{Columns: []clause.Column{{Name: "date"}}, DoNothing: true}
	for _, t := range []struct {
		name string
		rows any
	}{{"contribute", &contribute}, {"visit_statistics", &visits}, {"like_statistics", &likes}, {"comment_statistics", &comments}} {
		if err := tx.WithContext(ctx).Clauses(ifAbsent).Create(t.rows).Error; err != nil {
			return fmt.Errorf("insert %s for %s: %w", t.name, dateRange(dates), err)
		}
	}
	return nil
}

// Migrate implements jobs.Migrator: it creates or adopts the four tables.
func (Job) Migrate(ctx context.Context, db *gorm.DB) error {
	models := make([]any, 0, 4)
	for _, s := range Stats() {
		models = append(models, s.model)
	}
	return model.EnsureTables(db.WithContext(ctx), models, func(db *gorm.DB, table string) error {
		n, err := countDuplicateDates(db, table)
		if err != nil {
			return err
		}
		if n > 0 {
			return &DuplicateDatesError{Table: table, Dates: n}
		}
		return nil
	})
}

// MigrateTables creates or adopts the four tables under the database's
// migration lock, as `leasecron migrate` does.
func MigrateTables(ctx context.Context, db *gorm.DB) error {
	return model.Migrate(ctx, db, func(db *gorm.DB) error { return Job{}.Migrate(ctx, db) })
}

func dateRange(dates []model.Date) string {
	if len(dates) == 1 {
		return dates[0].String()
	}
	return fmt.Sprintf("%d dates from %s to %s", len(dates), dates[0], dates[len(dates)-1])
}

// DuplicateDatesError reports that a statistics table holds more than one row
// for some dates, so its unique key on date cannot be added.
type DuplicateDatesError struct {
	Table string
	Dates int64
}

func (e *DuplicateDatesError) Error() string {
	return fmt.Sprintf("table %s holds %d dates with more than one row, so the unique key on date cannot be added: "+
		"run 'leasecron verify' to list them and 'leasecron dedupe' to merge them (a dry run; add --apply to change anything), then migrate again", e.Table, e.Dates)
}

func countDuplicateDates(db *gorm.DB, table string) (int64, error) {
	var n int64
	err := db.Raw("SELECT COUNT(*) FROM (SELECT date FROM " + model.Quote(db, table) +
		" WHERE date IS NOT NULL GROUP BY date HAVING COUNT(*) > 1) d").Scan(&n).Error
	if err != nil {
		return 0, fmt.Errorf("count duplicate dates in %s: %w", table, err)
	}
	return n, nil
}

// Stat is one of the four daily statistics tables.
type Stat struct {
	// Table is the table's name.
	Table string
	// CountColumn is its count column.
	CountColumn string
	// model is the gorm model used to create the table.
	model any
}

// Contribute is a row of the contribute table.
type Contribute struct {
	ID               int64      `gorm:"primaryKey;autoIncrement"`
	Date             model.Date `gorm:"uniqueIndex:uk_contribute_date"`
	ContributeCounts *int       `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (Contribute) TableName() string { return "contribute" }

// VisitStatistics is a row of the visit_statistics table.
type VisitStatistics struct {
	ID    int64      `gorm:"primaryKey;autoIncrement"`
	Date  model.Date `gorm:"uniqueIndex:uk_visit_statistics_date"`
	Times *int       `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (VisitStatistics) TableName() string { return "visit_statistics" }

// LikeStatistics is a row of the like_statistics table.
type LikeStatistics struct {
	ID    int64      `gorm:"primaryKey;autoIncrement"`
	Date  model.Date `gorm:"uniqueIndex:uk_like_statistics_date"`
	Times *int       `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (LikeStatistics) TableName() string { return "like_statistics" }

// CommentStatistics is a row of the comment_statistics table.
type CommentStatistics struct {
	ID    int64      `gorm:"primaryKey;autoIncrement"`
	Date  model.Date `gorm:"uniqueIndex:uk_comment_statistics_date"`
	Times *int       `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (CommentStatistics) TableName() string { return "comment_statistics" }

// Stats lists the four statistics tables in a fixed order.
func Stats() []Stat {
	return []Stat{
		{Table: "contribute", CountColumn: "contribute_counts", model: &Contribute{}},
		{Table: "visit_statistics", CountColumn: "times", model: &VisitStatistics{}},
		{Table: "like_statistics", CountColumn: "times", model: &LikeStatistics{}},
		{Table: "comment_statistics", CountColumn: "times", model: &CommentStatistics{}},
	}
}

// Kind is the dailyStats kind for a spec.Catalog.
type Kind struct{}

// Name implements spec.Kind.
func (Kind) Name() string { return KindName }

// Build implements spec.Kind: dailyStats has no settings to check.
func (Kind) Build(spec.Job) (any, error) { return Job{}, nil }

// Spec returns the job `--schedule daily-stats=EXPR` defines.
func Spec(schedule string) spec.ScheduledJob {
	sj := spec.ScheduledJob{Spec: spec.JobSpec{Schedule: schedule, DailyStats: &spec.DailyStats{}}}
	sj.APIVersion, sj.Kind, sj.Name = spec.APIVersion, spec.KindName, Name
	return sj
}
