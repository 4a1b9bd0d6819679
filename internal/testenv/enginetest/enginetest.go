// Package enginetest runs one job definition through the real engine on a
// fresh database of one dialect, and runs a job's work as the engine would:
// what the kinds' tests share. It is apart from testenv because package jobs' own
// tests use testenv.
package enginetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// OpenDB opens a fresh database of dialect with the ledger's tables, closed
// at the test's cleanup.
func OpenDB(t testing.TB, dialect string) *gorm.DB {
	t.Helper()
	ctx := context.Background()
	dsn, err := model.ParseDSN(testenv.DSN(t, dialect))
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.OpenWith(ctx, dsn, model.OpenOptions{Wait: 10 * time.Second, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(db) })
	if err := jobs.Migrate(ctx, db, nil); err != nil {
		t.Fatal(err)
	}
	return db
}

// Scheduler returns a scheduler of def alone on db, writing as holder and
// logging to log.
func Scheduler(t testing.TB, db *gorm.DB, holder string, def jobs.Definition, log *slog.Logger) *jobs.Scheduler {
	t.Helper()
	s, err := jobs.New(db, holder, []jobs.Definition{def}, jobs.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// RunAt runs job's slot at under fence, with a minute for it.
func RunAt(t testing.TB, s *jobs.Scheduler, fence jobs.Fence, job string, at time.Time) (jobs.Outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.RunSlot(ctx, fence, job, at, time.Now().Add(time.Minute))
}

// Rows returns job's ledger rows, oldest slot first.
func Rows(t testing.TB, db *gorm.DB, job string) []jobs.JobRun {
	t.Helper()
	var rs []jobs.JobRun
	if err := db.Where("job = ?", job).Order("slot").Find(&rs).Error; err != nil {
		t.Fatal(err)
	}
	return rs
}

// RunAsync runs w for slot in a goroutine, as the engine would; the channel
// gets Run's error.
func RunAsync(ctx context.Context, w jobs.Job, slot jobs.Slot) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- w.Run(ctx, slot) }()
	return ch
}

// Result waits for the error of a RunAsync, failing the test if Run takes
// longer than within.
func Result(t testing.TB, ch <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(within):
		t.Fatalf("Run did not return within %s", within)
		return nil
	}
}
