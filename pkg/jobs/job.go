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
	date := model.DateOf(slot.In(j.Location))
	zero := 0
	rows := []any{
		&model.Contribute{Date: date, ContributeCounts: &zero},
		&model.VisitStatistics{Date: date, Times: &zero},
		&model.LikeStatistics{Date: date, Times: &zero},
		&model.CommentStatistics{Date: date, Times: &zero},
	}
	ifAbsent := clause.OnConflict{Columns: []clause.Column{{Name: "date"}}, DoNothing: true}
	for _, r := range rows {
		if err := tx.WithContext(ctx).Clauses(ifAbsent).Create(r).Error; err != nil {
			return fmt.Errorf("insert %s for %s: %w", tableOf(r), date, err)
		}
	}
	return nil
}

func tableOf(v any) string {
	if t, ok := v.(interface{ TableName() string }); ok {
		return t.TableName()
	}
	return fmt.Sprintf("%T", v)
}
