package jobs

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/model"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// forEachDialect runs f against a fresh, migrated database of every dialect.
func forEachDialect(t *testing.T, f func(t *testing.T, db *gorm.DB)) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			f(t, openDB(t, testenv.DSN(t, d)))
		})
	}
}

func openDB(t *testing.T, raw string) *gorm.DB {
	t.Helper()
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := model.Open(ctx, dsn, 10*time.Second, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(db) })
	if err := Migrate(ctx, db, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&stamp{}); err != nil {
		t.Fatal(err)
	}
	return db
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// stamp is a row of the stamps table that stampJob writes.
type stamp struct {
	Job  string `gorm:"primaryKey;size:64"`
	Date string `gorm:"primaryKey;size:10"`
}

// stampJob writes its slot's date, in the job's zone, into the stamps table
// in the ledger's transaction, insert-if-absent: a TxJob and a BatchTxJob.
type stampJob struct{}

func (j stampJob) RunTx(ctx context.Context, tx *gorm.DB, s Slot) error {
	return j.RunTxBatch(ctx, tx, []Slot{s})
}

func (stampJob) RunTxBatch(ctx context.Context, tx *gorm.DB, ss []Slot) error {
	rows := make([]stamp, len(ss))
	for i, s := range ss {
		rows[i] = stamp{Job: s.Job, Date: s.Date.String()}
	}
	return tx.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&rows).Error
}

// stamps returns how many stamps the database holds for date.
func stamps(t *testing.T, db *gorm.DB, date model.Date) int64 {
	t.Helper()
	var n int64
	if err := db.Model(&stamp{}).Where("date = ?", date.String()).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// def returns a definition of work on schedule expr in loc.
func def(t *testing.T, name, expr string, loc *time.Location, work any) Definition {
	t.Helper()
	return Definition{Name: name, Schedule: mustSchedule(t, expr, loc), Work: work}
}

// runs returns the ledger rows of job, oldest slot first.
func runs(t *testing.T, db *gorm.DB, job string) []JobRun {
	t.Helper()
	var rs []JobRun
	if err := db.Where("job = ?", job).Order("slot").Find(&rs).Error; err != nil {
		t.Fatal(err)
	}
	return rs
}
