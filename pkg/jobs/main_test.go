package jobs

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"gorm.io/gorm"

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
	if err := model.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// countRows returns how many rows table holds for date.
func countRows(t *testing.T, db *gorm.DB, table string, date model.Date) int64 {
	t.Helper()
	var n int64
	if err := db.Table(table).Where("date = ?", date).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// runs returns the ledger rows of job, oldest slot first.
func runs(t *testing.T, db *gorm.DB, job string) []model.JobRun {
	t.Helper()
	var rs []model.JobRun
	if err := db.Where("job = ?", job).Order("slot").Find(&rs).Error; err != nil {
		t.Fatal(err)
	}
	return rs
}
