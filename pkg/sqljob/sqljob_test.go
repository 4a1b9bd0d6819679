package sqljob_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/enginetest"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// openDB opens a fresh database of dialect with the ledger's tables.
func openDB(t *testing.T, dialect string) *gorm.DB { return enginetest.OpenDB(t, dialect) }

func exec(t *testing.T, db *gorm.DB, query string, args ...any) {
	t.Helper()
	if err := db.Exec(query, args...).Error; err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// counterTable makes a table of counters at 0: work that is not idempotent,
// so a slot that commits twice shows as 2.
func counterTable(t *testing.T, db *gorm.DB, names ...string) {
	t.Helper()
	exec(t, db, "CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)")
	for _, n := range names {
		exec(t, db, "INSERT INTO counters (name, n) VALUES (?, 0)", n)
	}
}

func counter(t *testing.T, db *gorm.DB, name string) int {
	t.Helper()
	var n int
	if err := db.Raw("SELECT n FROM counters WHERE name = ?", name).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// timestampType is a column type that holds an instant on dialect.
func timestampType(dialect string) string {
	switch dialect {
	case model.Postgres:
		return "TIMESTAMPTZ"
	case model.MySQL:
		return "DATETIME(6)"
	}
	return "TIMESTAMP"
}

// once is a spec that gives a failed slot no second attempt.
func once(sj *spec.ScheduledJob) *spec.ScheduledJob {
	one := int32(1)
	sj.Spec.Retries = &spec.Retries{Limit: &one}
	return sj
}

// leader builds sj for dialect through the catalog, and a scheduler with its
// first leadership term.
func leader(t *testing.T, db *gorm.DB, dialect string, sj *spec.ScheduledJob) (*jobs.Scheduler, jobs.Fence, jobs.Definition) {
	t.Helper()
	def, err := define(sj, dialect)
	if err != nil {
		t.Fatal(err)
	}
	sched, err := jobs.New(db, "leader", []jobs.Definition{def}, jobs.Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	fence, err := sched.Ledger().BeginTerm(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	return sched, fence, def
}

// runSlot runs one slot to its end and returns its outcome.
func runSlot(t *testing.T, sched *jobs.Scheduler, fence jobs.Fence, name string, slot time.Time) jobs.Outcome {
	t.Helper()
	out, err := sched.RunSlot(context.Background(), fence, name, slot, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("RunSlot(%s) = %v, %v", slot.Format(time.RFC3339), out, err)
	}
	return out
}

func ledgerRow(t *testing.T, db *gorm.DB, job string, slot time.Time) jobs.JobRun {
	t.Helper()
	var r jobs.JobRun
	if err := db.Where("job = ? AND slot = ?", job, slot.UTC()).Take(&r).Error; err != nil {
		t.Fatalf("ledger row of %s %s: %v", job, slot.Format(time.RFC3339), err)
	}
	return r
}

// A statement that is not idempotent takes effect once per slot: running a
// slot that succeeded again skips it.
func TestStatementTakesEffectOncePerSlot(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := openDB(t, d)
			counterTable(t, db, "n")
			sched, fence, _ := leader(t, db, d, sqlJob("count", "UPDATE counters SET n = n + 1 WHERE name = 'n'"))
			slot := time.Date(2026, 3, 14, 5, 0, 0, 0, time.UTC)
			if out := runSlot(t, sched, fence, "count", slot); out != jobs.Succeeded {
				t.Fatalf("first run = %v, want succeeded", out)
			}
			if n := counter(t, db, "n"); n != 1 {
				t.Fatalf("counter = %d after one slot, want 1", n)
			}
			if out := runSlot(t, sched, fence, "count", slot); out != jobs.Skipped {
				t.Fatalf("second run of the slot = %v, want skipped", out)
			}
			if n := counter(t, db, "n"); n != 1 {
				t.Fatalf("counter = %d after the slot ran again, want 1", n)
			}
			if out := runSlot(t, sched, fence, "count", slot.Add(24*time.Hour)); out != jobs.Succeeded {
				t.Fatalf("next slot = %v, want succeeded", out)
			}
			if n := counter(t, db, "n"); n != 2 {
				t.Fatalf("counter = %d after two slots, want 2", n)
			}
		})
	}
}

// Every parameter arrives with the slot's value: times in UTC, the date in
// the job's zone (20:00 UTC is 05:00 of the next day in Tokyo), the previous
// slot as the interval's start.
func TestParametersArriveWithTheSlotsValues(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := openDB(t, d)
			ts := timestampType(d)
			exec(t, db, "CREATE TABLE params (job VARCHAR(64), k VARCHAR(255), slot "+ts+", slot_date DATE, prev_slot "+ts+" NULL, slot_again "+ts+")")
			exec(t, db, "CREATE TABLE orders (id INTEGER PRIMARY KEY, created_at "+ts+" NOT NULL)")
			exec(t, db, "CREATE TABLE rollup (day DATE PRIMARY KEY, total INTEGER NOT NULL)")

			slot := time.Date(2026, 3, 14, 20, 0, 0, 0, time.UTC) // 2026-03-15 05:00 in Tokyo
			prev := slot.Add(-24 * time.Hour)
			for i, at := range []time.Time{prev.Add(-time.Minute), prev, slot.Add(-time.Second), slot} {
				exec(t, db, "INSERT INTO orders (id, created_at) VALUES (?, ?)", i, at)
			}
			sj := sqlJob("params",
				"INSERT INTO params (job, k, slot, slot_date, prev_slot, slot_again) VALUES (@job, @key, @slot, @slot_date, @prev_slot, @slot)",
				// The design's example: the slot's interval, counted under its date.
				`INSERT INTO rollup (day, total)
				 SELECT @slot_date, count(*) FROM orders WHERE created_at >= @prev_slot AND created_at < @slot`)
			sj.Spec.TimeZone = "Asia/Tokyo"
			sched, fence, _ := leader(t, db, d, once(sj))
			if out := runSlot(t, sched, fence, "params", slot); out != jobs.Succeeded {
				t.Fatalf("run = %v, want succeeded: %s", out, ledgerRow(t, db, "params", slot).Error)
			}

			var rows []struct {
				Job, K          string
				Slot, SlotAgain time.Time
				SlotDate        model.Date
				PrevSlot        *time.Time
			}
			if err := db.Raw("SELECT job, k, slot, slot_date, prev_slot, slot_again FROM params").Scan(&rows).Error; err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Fatalf("%d rows, want 1", len(rows))
			}
			r := rows[0]
			if r.Job != "params" {
				t.Errorf("@job = %q, want params", r.Job)
			}
			if want := "params@2026-03-14T20:00:00Z"; r.K != want {
				t.Errorf("@key = %q, want %q", r.K, want)
			}
			if !r.Slot.Equal(slot) || !r.SlotAgain.Equal(slot) {
				t.Errorf("@slot = %v and %v, want %v", r.Slot, r.SlotAgain, slot)
			}
			if want := (model.Date{Year: 2026, Month: 3, Day: 15}); r.SlotDate != want {
				t.Errorf("@slot_date = %v, want %v (the slot's date in Tokyo)", r.SlotDate, want)
			}
			if r.PrevSlot == nil || !r.PrevSlot.Equal(prev) {
				t.Errorf("@prev_slot = %v, want %v", r.PrevSlot, prev)
			}

			var rollup []struct {
				Day   model.Date
				Total int
			}
			if err := db.Raw("SELECT day, total FROM rollup").Scan(&rollup).Error; err != nil {
				t.Fatal(err)
			}
			if len(rollup) != 1 || rollup[0].Day.String() != "2026-03-15" || rollup[0].Total != 2 {
				t.Fatalf("rollup = %+v, want 2026-03-15 with the 2 orders in [prev_slot, slot)", rollup)
			}
		})
	}
}

// A failing statement rolls back the ones before it, and the ledger records
// the slot as failed with the statement's error, after Policy.Attempts.
func TestFailingStatementRollsBackTheSlot(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := openDB(t, d)
			counterTable(t, db, "n")
			sj := sqlJob("fails", "UPDATE counters SET n = n + 1 WHERE name = 'n'", "INSERT INTO no_such_table (x) VALUES (1)")
			two := int32(2)
			ms := &metav1.Duration{Duration: time.Millisecond}
			sj.Spec.Retries = &spec.Retries{Limit: &two, Backoff: &spec.Backoff{Initial: ms, Max: ms}}
			sched, fence, _ := leader(t, db, d, sj)
			slot := time.Date(2026, 3, 14, 5, 0, 0, 0, time.UTC)
			if out := runSlot(t, sched, fence, "fails", slot); out != jobs.Failed {
				t.Fatalf("run = %v, want failed", out)
			}
			if n := counter(t, db, "n"); n != 0 {
				t.Fatalf("counter = %d, want 0: the first statement committed without the second", n)
			}
			r := ledgerRow(t, db, "fails", slot)
			if r.Status != jobs.StatusFailed || r.Attempts != 2 {
				t.Errorf("ledger row is %s after %d attempts, want failed after 2", r.Status, r.Attempts)
			}
			for _, w := range []string{"statement 2 (spec.sql.statements[1])", "no_such_table"} {
				if !strings.Contains(r.Error, w) {
					t.Errorf("ledger error %q lacks %q", r.Error, w)
				}
			}
		})
	}
}

// A leader whose term was superseded between its claim and its commit adds
// nothing, although its statements ran; the new leader's run adds one.
func TestFencedLeaderCommitsNothing(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := openDB(t, d)
			counterTable(t, db, "fenced")
			sched, f1, def := leader(t, db, d, sqlJob("fenced", "UPDATE counters SET n = n + 1 WHERE name = @job"))
			slot := time.Date(2026, 3, 14, 5, 0, 0, 0, time.UTC)
			old := sched.Ledger()
			if done, err := old.Claim(ctx, f1, "fenced", slot); err != nil || done {
				t.Fatalf("claim = %v, %v", done, err)
			}
			next := jobs.NewLedger(db, "next")
			f2, err := next.BeginTerm(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			work := def.Work.(jobs.TxJob)
			sc := jobs.Slot{Job: "fenced", Time: slot, Key: jobs.SlotKey("fenced", slot), Date: model.DateOf(slot), Attempt: 1, Term: f1.Term}
			ran := false
			err = old.Complete(ctx, f1, "fenced", slot, func(tx *gorm.DB) error {
				ran = true
				return work.RunTx(ctx, tx, sc)
			})
			if !errors.Is(err, jobs.ErrFenced) || !ran {
				t.Fatalf("stale leader's Complete = %v (work ran: %v), want ErrFenced after the work", err, ran)
			}
			if n := counter(t, db, "fenced"); n != 0 {
				t.Fatalf("counter = %d after the fenced run, want 0", n)
			}
			sched2, err := jobs.New(db, "next", []jobs.Definition{def}, jobs.Options{Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			if out := runSlot(t, sched2, f2, "fenced", slot); out != jobs.Succeeded {
				t.Fatalf("new leader's run = %v, want succeeded", out)
			}
			if n := counter(t, db, "fenced"); n != 1 {
				t.Fatalf("counter = %d after the new leader's run, want 1", n)
			}
		})
	}
}

// The work refuses to run outside a transaction: it would commit on its own.
func TestRunTxNeedsATransaction(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := openDB(t, d)
			counterTable(t, db, "n")
			def, err := define(sqlJob("notx", "UPDATE counters SET n = n + 1"), d)
			if err != nil {
				t.Fatal(err)
			}
			slot := jobs.Slot{Job: "notx", Time: time.Now().UTC()}
			if err := def.Work.(jobs.TxJob).RunTx(context.Background(), db, slot); err == nil || !strings.Contains(err.Error(), "not a transaction") {
				t.Fatalf("RunTx outside a transaction = %v, want a refusal", err)
			}
			if n := counter(t, db, "n"); n != 0 {
				t.Fatalf("counter = %d, want 0", n)
			}
		})
	}
}

// A job built without knowing the dialect is checked and rewritten for the
// database it first runs on: its parameters bind there, and a statement that
// commits implicitly there fails the slot without running.
func TestJobBuiltWithoutDialect(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := openDB(t, d)
			counterTable(t, db, "later")
			sched, fence, _ := leader(t, db, "", sqlJob("later", "UPDATE counters SET n = n + 1 WHERE name = @job"))
			slot := time.Date(2026, 3, 14, 5, 0, 0, 0, time.UTC)
			if out := runSlot(t, sched, fence, "later", slot); out != jobs.Succeeded {
				t.Fatalf("run = %v, want succeeded: %s", out, ledgerRow(t, db, "later", slot).Error)
			}
			if n := counter(t, db, "later"); n != 1 {
				t.Fatalf("counter = %d, want 1", n)
			}
			if d != model.MySQL {
				return
			}
			sched, fence, _ = leader(t, db, "", once(sqlJob("ddl", "UPDATE counters SET n = n + 1 WHERE name = 'later'", "ALTER TABLE counters ADD COLUMN c INT")))
			if out := runSlot(t, sched, fence, "ddl", slot); out != jobs.Failed {
				t.Fatalf("run with DDL = %v, want failed", out)
			}
			if e := ledgerRow(t, db, "ddl", slot).Error; !strings.Contains(e, "ALTER commits implicitly") {
				t.Fatalf("ledger error %q, want the refusal", e)
			}
			if n := counter(t, db, "later"); n != 1 {
				t.Fatalf("counter = %d, want 1: nothing of the refused job may run", n)
			}
		})
	}
}

// The attempt's timeout is a limit on the server: an overlong statement is
// stopped by the server's own timeout (not by the client abandoning the
// connection), and the statements before it roll back.
func TestStatementLimitIsServerSide(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			if d == model.SQLite {
				t.Skip("SQLite runs in the process: there is no server to set a limit on; the attempt's context interrupts a statement")
			}
			db := openDB(t, d)
			if d == model.Postgres {
				// One connection, so the check below reads the session the
				// job's transaction ran on.
				sqlDB, err := db.DB()
				if err != nil {
					t.Fatal(err)
				}
				sqlDB.SetMaxOpenConns(1)
			}
			counterTable(t, db, "n")
			sleep, want := "SELECT pg_sleep(5)", "canceling statement due to statement timeout"
			if d == model.MySQL {
				// MariaDB interrupts SLEEP in a SELECT with an error, but DO
				// SLEEP() and SELECT BENCHMARK() end early without one.
				sleep, want = "SELECT SLEEP(5)", "max_statement_time exceeded"
			}
			sj := once(sqlJob("slow", "UPDATE counters SET n = n + 1 WHERE name = 'n'", sleep))
			sj.Spec.Timeout = &metav1.Duration{Duration: time.Second}
			sched, fence, _ := leader(t, db, d, sj)
			slot := time.Date(2026, 3, 14, 5, 0, 0, 0, time.UTC)
			if out := runSlot(t, sched, fence, "slow", slot); out != jobs.Failed {
				t.Fatalf("run = %v, want failed", out)
			}
			r := ledgerRow(t, db, "slow", slot)
			for _, w := range []string{"statement 2", "stopped by the server", want} {
				if !strings.Contains(r.Error, w) {
					t.Errorf("ledger error %q lacks %q", r.Error, w)
				}
			}
			if n := counter(t, db, "n"); n != 0 {
				t.Fatalf("counter = %d, want 0", n)
			}
			if d == model.Postgres {
				var v string
				if err := db.Raw("SHOW statement_timeout").Scan(&v).Error; err != nil {
					t.Fatal(err)
				}
				if v != "0" {
					t.Fatalf("statement_timeout = %q on the session after the job, want 0: the limit must end with the transaction", v)
				}
			}
		})
	}
}

// On PostgreSQL the limit holds for the rest of the job's transaction (SET
// LOCAL) and no longer: the pooled session it ran on keeps its own setting.
func TestPostgresStatementLimitLastsTheTransaction(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, model.Postgres)
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1) // every query below runs on the same session
	def, err := define(sqlJob("quick", "SELECT 1"), model.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 30 * time.Second
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	setting := func(tx *gorm.DB) int64 {
		t.Helper()
		var ms int64
		if err := tx.Raw("SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'").Scan(&ms).Error; err != nil {
			t.Fatal(err)
		}
		return ms
	}
	var inside int64
	err = db.WithContext(actx).Transaction(func(tx *gorm.DB) error {
		if err := def.Work.(jobs.TxJob).RunTx(actx, tx, jobs.Slot{Job: "quick", Time: time.Now().UTC()}); err != nil {
			return err
		}
		inside = setting(tx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside <= 0 || inside > timeout.Milliseconds() {
		t.Errorf("statement_timeout in the job's transaction = %dms, want within the attempt's %s", inside, timeout)
	}
	if after := setting(db); after != 0 {
		t.Errorf("statement_timeout on the session after the transaction committed = %dms, want 0", after)
	}
}
