package jobs

import (
	"context"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/model"
)

func openTestDB(t *testing.T, dialect string) (*Scheduler, model.DSN) {
	t.Helper()
	dsn, err := model.ParseDSN(testenv.DSN(t, dialect))
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.Open(context.Background(), dsn, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(db) })
	if err := Migrate(context.Background(), db, nil); err != nil {
		t.Fatal(err)
	}
	return quietScheduler(t, db), dsn
}

// Shutdown cancels a BeginTerm that waits on the term row (here: another
// session holds it), and beginTerm returns the zero fence: nothing to lead.
func TestBeginTermIsCancelledByShutdown(t *testing.T) {
	s, dsn := openTestDB(t, "postgres")
	ctx := context.Background()
	if _, err := s.Ledger().BeginTerm(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	other, err := model.Open(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(other) })
	holder := other.Begin()
	if err := holder.Exec("SELECT term FROM leader_terms WHERE scope = 's' FOR UPDATE").Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Rollback() })

	shutdown, stop := context.WithCancel(ctx)
	type result struct {
		f   Fence
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := s.beginTerm(ctx, shutdown, s.Ledger(), "s", RunOptions{DatabaseLostTimeout: time.Hour, Scrub: dsn.Scrub})
		done <- result{f, err}
	}()
	// Wait until BeginTerm is blocked on the row lock, then shut down.
	for deadline := time.Now().Add(10 * time.Second); ; {
		var waiting int
		if err := other.Raw("SELECT count(*) FROM pg_locks WHERE NOT granted").Scan(&waiting).Error; err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("BeginTerm never waited for the term row")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	stop()
	select {
	case r := <-done:
		if r.err != nil || !r.f.Manual() {
			t.Fatalf("beginTerm after shutdown = %+v, %v; want the zero fence and no error", r.f, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("beginTerm kept waiting for the term row after shutdown")
	}
}

// A term that cannot begin for the database-lost timeout ends leadership with ErrDatabaseLost.
func TestBeginTermGivesUpWithoutDatabase(t *testing.T) {
	dsn, err := model.ParseDSN("sqlite://" + t.TempDir() + "/x.db")
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.Open(context.Background(), dsn, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = model.Close(db) // every statement now fails
	start := time.Now()
	s := quietScheduler(t, db)
	_, err = s.beginTerm(context.Background(), context.Background(), s.Ledger(), "s", RunOptions{DatabaseLostTimeout: 700 * time.Millisecond, Scrub: dsn.Scrub})
	if !errors.Is(err, ErrDatabaseLost) {
		t.Fatalf("beginTerm = %v, want ErrDatabaseLost", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("beginTerm gave up after %s, want about 700ms", took)
	}
}

func quietScheduler(t *testing.T, db *gorm.DB) *Scheduler {
	t.Helper()
	s, err := New(db, "me", nil, Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
