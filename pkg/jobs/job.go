package jobs

import (
	"context"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/leasecron/leasecron/pkg/model"
)

// Job is work that runs once per slot. Run receives the slot's time (never
// the current time) and the transaction that also marks the slot done: what
// the job writes through tx commits together with its ledger row, or not at
// all. Run must be idempotent for a slot, since a slot may be retried.
type Job interface {
	Name() string
	// DefaultSchedule is the cron expression used when none is configured.
	DefaultSchedule() string
	Run(ctx context.Context, tx *gorm.DB, slot time.Time) error
}

// BatchJob is a Job that can also run many slots at once, in one
// transaction, as backfill does. RunBatch must do what Run would do for each
// slot.
type BatchJob interface {
	Job
	RunBatch(ctx context.Context, tx *gorm.DB, slots []time.Time) error
}

// Registry maps job names to jobs.
type Registry map[string]Job

// Builtin returns the jobs leasecron ships with.
func Builtin(loc *time.Location) Registry {
	return Registry{DailyStatsName: &DailyStats{Location: loc}}
}

// Names returns the registered job names in order.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DailyStatsName is the name of the built-in statistics job.
const DailyStatsName = "daily-stats"

// DailyStats inserts the slot's date, taken in Location, into the four
// statistics tables with zero counts, skipping any table that already has a
// row for that date (insert-if-absent on the unique date key).
type DailyStats struct {
	Location *time.Location
}

// Name implements Job.
func (*DailyStats) Name() string { return DailyStatsName }

// DefaultSchedule implements Job: 00:00:50 every day.
func (*DailyStats) DefaultSchedule() string { return "50 0 0 * * *" }

// Run implements Job.
func (j *DailyStats) Run(ctx context.Context, tx *gorm.DB, slot time.Time) error {
	return j.RunBatch(ctx, tx, []time.Time{slot})
}

// RunBatch implements BatchJob: one insert-if-absent statement per table for
// all the slots' dates.
func (j *DailyStats) RunBatch(ctx context.Context, tx *gorm.DB, slots []time.Time) error {
	var dates []model.Date
	for _, s := range slots {
		if d := model.DateOf(s.In(j.Location)); !slices.Contains(dates, d) {
			dates = append(dates, d)
		}
	}
	zero := 0
	var (
		contribute = make([]model.Contribute, len(dates))
		visits     = make([]model.VisitStatistics, len(dates))
		likes      = make([]model.LikeStatistics, len(dates))
		comments   = make([]model.CommentStatistics, len(dates))
	)
	for i, d := range dates {
		contribute[i] = model.Contribute{Date: d, ContributeCounts: &zero}
		visits[i] = model.VisitStatistics{Date: d, Times: &zero}
		likes[i] = model.LikeStatistics{Date: d, Times: &zero}
		comments[i] = model.CommentStatistics{Date: d, Times: &zero}
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

func dateRange(dates []model.Date) string {
	if len(dates) == 1 {
		return dates[0].String()
	}
	return fmt.Sprintf("%d dates from %s to %s", len(dates), dates[0], dates[len(dates)-1])
}
