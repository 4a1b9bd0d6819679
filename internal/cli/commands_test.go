package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/testdb"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/model"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestManualCommands drives once, backfill, verify and status through the
// command line against every dialect: backfill fills a range through the
// ledger, a second backfill and a repeated once change nothing, verify finds
// the gap around a hole and is clean on the filled range, and status lists
// the runs.
func TestManualCommands(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			run := commandRunner(t, "--database-dsn", testenv.DSN(t, dialect), "--timezone", "Asia/Shanghai", "--log-level", "error")
			expect := func(out, want string) {
				t.Helper()
				if !strings.Contains(out, want) {
					t.Fatalf("output %q does not contain %q", out, want)
				}
			}

			out := run(ExitOK, "backfill", "daily-stats", "--from", "2026-01-01", "--to", "2026-01-10")
			expect(out, "10 slots from 2026-01-01 to 2026-01-10: 10 succeeded, 0 already done, 0 failed")
			out = run(ExitOK, "backfill", "daily-stats", "--from", "2026-01-05", "--to", "2026-01-12")
			expect(out, "8 slots from 2026-01-05 to 2026-01-12: 2 succeeded, 6 already done, 0 failed")

			// The slot of 2026-01-20 is 00:00:50 in Shanghai, 16:00:50 UTC the day before.
			out = run(ExitOK, "once", "daily-stats", "--date", "2026-01-20")
			expect(out, "daily-stats 2026-01-20T00:00:50+08:00: succeeded")
			out = run(ExitOK, "once", "daily-stats", "--date", "2026-01-20")
			expect(out, "daily-stats 2026-01-20T00:00:50+08:00: skipped")

			out = run(ExitOK, "verify", "--from", "2026-01-01", "--to", "2026-01-12")
			for _, table := range []string{"contribute", "visit_statistics", "like_statistics", "comment_statistics"} {
				expect(out, table+": ok")
			}
			out = run(ExitFailure, "verify")
			expect(out, "checking 2026-01-01 to 2026-01-20")
			expect(out, "like_statistics: 7 missing dates: 2026-01-13, 2026-01-14")

			out = run(ExitOK, "status", "--limit", "3")
			expect(out, "daily-stats  2026-01-20T00:00:50+08:00  succeeded  once:")
			if n := strings.Count(out, "succeeded"); n != 3 {
				t.Fatalf("status shows %d succeeded runs with --limit 3:\n%s", n, out)
			}
		})
	}
}

// TestLegacyDatabaseDedupe walks an operator through adopting the old
// application's MariaDB database, six rows per date: migrate refuses and
// names the fix, verify lists the duplicates, dedupe shows and then merges
// them, and afterwards migrate succeeds and verify is clean.
func TestLegacyDatabaseDedupe(t *testing.T) {
	dsn := testenv.DSN(t, "mysql")
	loadLegacy(t, dsn, 30, 6)
	db := []string{"--database-dsn", dsn, "--log-level", "error"}
	run := func(want int, args ...string) (string, string) {
		t.Helper()
		code, stdout, stderr := execute(t, nil, append(args, db...)...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, stdout, stderr)
		}
		return stdout, stderr
	}
	_, stderr := run(ExitFailure, "migrate")
	if !strings.Contains(stderr, "holds 30 dates with more than one row") || !strings.Contains(stderr, "leasecron dedupe") {
		t.Fatalf("migrate on duplicates said %q", stderr)
	}
	out, _ := run(ExitFailure, "verify")
	if !strings.Contains(out, "visit_statistics: 30 duplicate dates: 2019-06-01 (6 rows)") {
		t.Fatalf("verify did not list the duplicates:\n%s", out)
	}
	out, _ = run(ExitOK, "dedupe")
	if !strings.Contains(out, "dry run: nothing changed") || !strings.Contains(out, "contribute: 30 dates with more than one row, 150 rows to remove") {
		t.Fatalf("dedupe dry run:\n%s", out)
	}
	if out2, _ := run(ExitOK, "dedupe"); out2 != out {
		t.Fatalf("a dry run changed something: second run differs:\n%s", out2)
	}
	out, _ = run(ExitOK, "dedupe", "--apply")
	if !strings.Contains(out, "merged: 600 rows removed") {
		t.Fatalf("dedupe --apply:\n%s", out)
	}
	run(ExitOK, "migrate")
	out, _ = run(ExitOK, "verify")
	if !strings.Contains(out, "checking 2019-06-01 to 2019-06-30") || strings.Count(out, ": ok") != 4 {
		t.Fatalf("verify after dedupe:\n%s", out)
	}
}

// loadLegacy creates the old application's tables from the shared fixture
// and fills them with copies rows (count 1 each) for each of days dates.
func loadLegacy(t *testing.T, raw string, days, copies int) {
	t.Helper()
	db := testdb.Open(t, raw)
	for _, stmt := range testenv.SQLStatements(t, "../../pkg/dailystats/testdata/legacy-schema-mariadb.sql") {
		if err := db.Exec(stmt).Error; err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	for _, s := range dailystats.Stats() {
		var vals []string
		for d := 0; d < days; d++ {
			for c := 0; c < copies; c++ {
				vals = append(vals, fmt.Sprintf("('%s', 1)", model.Date{Year: 2019, Month: 6, Day: 1}.AddDays(d)))
			}
		}
		if err := db.Exec("INSERT INTO " + s.Table + " (date, " + s.CountColumn + ") VALUES " + strings.Join(vals, ", ")).Error; err != nil {
			t.Fatal(err)
		}
	}
}

// TestHTTPJobBackfillAndVerify: a backfill of an http job says how many
// requests it will send before it starts, sends one per slot, each with its
// own key, and a second backfill sends none; verify reports per job the slots
// without a succeeded row.
func TestHTTPJobBackfillAndVerify(t *testing.T) {
	rc := testenv.NewReceiver(t, nil)
	dir := t.TempDir()
	file := writeFile(t, dir, "jobs.yaml", `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: hook}
spec:
  schedule: "0 6 * * *"
  timeZone: UTC
  http: {url: "`+rc.URL()+`/hook", body: "{{.SlotDate}}"}
`)
	run := commandRunner(t, "--jobs-file", file, "--database-dsn", "sqlite://"+filepath.Join(dir, "x.db"), "--log-level", "error")
	out := run(ExitOK, "backfill", "hook", "--from", "2026-01-01", "--to", "2026-01-05")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "hook: 5 slots from 2026-01-01 to 2026-01-05 run outside the database (http): one delivery per slot at least, each with its own Idempotency-Key") ||
		!strings.Contains(lines[1], "5 succeeded, 0 already done, 0 failed") {
		t.Fatalf("backfill said:\n%s", out)
	}
	ds := rc.Deliveries("/hook")
	keys := testenv.PerKey(ds)
	if len(ds) != 5 || len(keys) != 5 {
		t.Fatalf("%d deliveries under %d keys, want 5 under 5", len(ds), len(keys))
	}
	for _, d := range ds {
		if !strings.HasPrefix(d.Key(), "hook@2026-01-0") || d.Key() != "hook@"+d.Body+"T06:00:00Z" {
			t.Errorf("delivery key %q, body %q: want the slot's own key and date", d.Key(), d.Body)
		}
	}
	out = run(ExitOK, "backfill", "hook", "--from", "2026-01-01", "--to", "2026-01-05")
	if !strings.Contains(out, "0 succeeded, 5 already done") || len(rc.Deliveries()) != 5 {
		t.Fatalf("second backfill sent %d more requests:\n%s", len(rc.Deliveries())-5, out)
	}
	out = run(ExitOK, "verify", "--from", "2026-01-01", "--to", "2026-01-05")
	if !strings.Contains(out, "job hook: ok") {
		t.Fatalf("verify of the filled range said:\n%s", out)
	}
	out = run(ExitFailure, "verify", "--from", "2026-01-01", "--to", "2026-01-07")
	if !strings.Contains(out, "job hook: 2 slots from 2026-01-01T00:00:00Z to 2026-01-07T23:59:59Z without a succeeded run: 2026-01-06T06:00:00Z, 2026-01-07T06:00:00Z") {
		t.Fatalf("verify of a range with a gap said:\n%s", out)
	}
}

// TestJobsCommand lists the jobs a file defines, as a table and as JSON and
// YAML documents a script can read, without any database.
func TestJobsCommand(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	file := writeFile(t, dir, "jobs.yaml", `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: rollup}
spec:
  schedule: "0 5 * * *"
  timeZone: Europe/Berlin
  timeout: 2m
  sql: {statements: ["SELECT @slot"]}
---
apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: hook}
spec:
  schedule: "@every 1h"
  suspend: true
  http: {url: "http://127.0.0.1:1/x"}
`)
	infos := documents[jobsDoc](t, nil, ExitOK, "jobs", "--jobs-file", file, "--next", "2").Jobs
	if len(infos) != 2 || infos[1].Name != "hook" || infos[1].Kind != "http" || !infos[1].Suspend || infos[1].Schedule != "@every 1h" || len(infos[1].NextSlots) != 2 ||
		infos[0].Name != "rollup" || infos[0].Kind != "sql" || infos[0].TimeZone != "Europe/Berlin" || infos[0].Timeout != "2m0s" || infos[0].Suspend || len(infos[0].NextSlots) != 2 {
		t.Fatalf("jobs = %+v, want rollup and hook in the file's order", infos)
	}
	for _, next := range infos[0].NextSlots {
		if next.Location() != time.UTC || next.In(mustZone(t, "Europe/Berlin")).Hour() != 5 || !next.After(time.Now()) {
			t.Errorf("rollup's next slot %s, want a coming 05:00 in Berlin, written in UTC", next)
		}
	}
	if gap := infos[1].NextSlots[1].Sub(infos[1].NextSlots[0]); gap != time.Hour {
		t.Errorf("hook's next slots are %s apart, want 1h", gap)
	}
	code, out, _ := execute(t, nil, "jobs", "--jobs-file", file)
	if code != ExitOK || !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "rollup") {
		t.Fatalf("table = %d:\n%s", code, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("jobs wrote %v", entries)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// commandRunner returns a function that runs a command line with flags
// appended, fails the test unless it exits want, and returns its stdout.
func commandRunner(t *testing.T, flags ...string) func(want int, args ...string) string {
	return func(want int, args ...string) string {
		t.Helper()
		code, stdout, stderr := execute(t, nil, append(args, flags...)...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, stdout, stderr)
		}
		return stdout
	}
}

// writeFile writes text to a file name in dir and returns its path.
func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
