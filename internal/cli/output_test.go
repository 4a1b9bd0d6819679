package cli

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/testdb"
	"github.com/leasecron/leasecron/internal/version"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/jobs"
)

// documents runs the command line with -o json and with -o yaml, checks that
// both exit wantCode with nothing on stderr, decodes each strictly (a field
// the documented struct T lacks is an error) and checks that they decode to
// the same value, which it returns.
func documents[T any](t *testing.T, env map[string]string, wantCode int, args ...string) T {
	t.Helper()
	var docs [2]T
	for i, format := range []string{"json", "yaml"} {
		code, stdout, stderr := execute(t, env, append(args, "-o", format)...)
		if code != wantCode || stderr != "" {
			t.Fatalf("%v -o %s: exit %d, want %d\nstdout: %s\nstderr: %s", args, format, code, wantCode, stdout, stderr)
		}
		var err error
		if format == "json" {
			dec := json.NewDecoder(strings.NewReader(stdout))
			dec.DisallowUnknownFields()
			err = dec.Decode(&docs[i])
			if err == nil && dec.More() {
				t.Fatalf("%v -o json printed more than one document:\n%s", args, stdout)
			}
		} else {
			err = yaml.UnmarshalStrict([]byte(stdout), &docs[i])
		}
		if err != nil {
			t.Fatalf("%v -o %s does not decode into %T: %v\n%s", args, format, docs[i], err, stdout)
		}
	}
	if !reflect.DeepEqual(docs[0], docs[1]) {
		t.Fatalf("%v: -o json and -o yaml differ:\njson: %+v\nyaml: %+v", args, docs[0], docs[1])
	}
	return docs[0]
}

// sameTime reports whether got is want, written in UTC.
func sameTime(got *time.Time, want time.Time) bool {
	return got != nil && got.Equal(want) && got.Location() == time.UTC
}

// TestStatusDocument: status -o json|yaml shows each scope's term, every job
// with its next slots and its last succeeded slot, and the recent runs, as
// the ledger holds them, on every dialect; -o table is the default table.
func TestStatusDocument(t *testing.T) {
	file := writeFile(t, t.TempDir(), "jobs.yaml", `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: hook}
spec:
  schedule: "0 6 * * *"
  timeZone: Asia/Shanghai
  http: {url: "http://127.0.0.1:1/hook"}
`)
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn := testenv.DSN(t, dialect)
			flags := []string{"--database-dsn", dsn, "--timezone", "UTC", "--log-level", "error"}
			commandRunner(t, flags...)(ExitOK, "backfill", "daily-stats", "--from", "2026-01-01", "--to", "2026-01-02")
			db := testdb.Open(t, dsn)
			fence, err := jobs.NewLedger(db, "replica-1").BeginTerm(context.Background(), "default/leasecron")
			if err != nil {
				t.Fatal(err)
			}
			var terms []jobs.LeaderTerm
			var runs []jobs.JobRun
			if err := db.Find(&terms).Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Order("slot DESC").Find(&runs).Error; err != nil {
				t.Fatal(err)
			}
			if len(terms) != 1 || len(runs) != 2 {
				t.Fatalf("ledger holds %d terms and %d runs, want 1 and 2", len(terms), len(runs))
			}

			args := append([]string{"status", "--jobs-file", file, "--schedule", "daily-stats=50 0 0 * * *"}, flags...)
			doc := documents[statusDoc](t, nil, ExitOK, args...)

			if len(doc.Leadership) != 1 {
				t.Fatalf("leadership = %+v, want the one term", doc.Leadership)
			}
			if l := doc.Leadership[0]; l.Scope != "default/leasecron" || l.Holder != "replica-1" || l.Term != fence.Term || !sameTime(l.StartedAt, *terms[0].StartedAt) {
				t.Errorf("leadership = %+v, want the ledger's term %+v", l, terms[0])
			}

			if len(doc.Jobs) != 2 || doc.Jobs[0].Name != "hook" || doc.Jobs[1].Name != "daily-stats" {
				t.Fatalf("jobs = %+v, want hook and daily-stats", doc.Jobs)
			}
			hook, stats := doc.Jobs[0], doc.Jobs[1]
			if hook.LastSuccess != nil || hook.Kind != "http" || hook.TimeZone != "Asia/Shanghai" || len(hook.NextSlots) != 3 {
				t.Errorf("hook = %+v, want an http job in Shanghai with no last success and 3 next slots", hook)
			}
			for _, next := range hook.NextSlots {
				if next.Location() != time.UTC || next.In(mustZone(t, "Asia/Shanghai")).Hour() != 6 || !next.After(time.Now()) {
					t.Errorf("hook's next slot %s, want a coming 06:00 in Shanghai, in UTC", next)
				}
			}
			// The second slot backfilled is the last success.
			if second := time.Date(2026, 1, 2, 0, 0, 50, 0, time.UTC); !sameTime(stats.LastSuccess, second) || !runs[0].Slot.Equal(second) {
				t.Errorf("daily-stats lastSuccess = %v, want the second slot %s (the ledger's latest is %s)", stats.LastSuccess, second, runs[0].Slot)
			}
			if stats.Kind != "dailyStats" || stats.Schedule != "50 0 0 * * *" || stats.TimeZone != "UTC" || stats.Timeout != "10m0s" || len(stats.NextSlots) != 3 {
				t.Errorf("daily-stats = %+v", stats)
			}

			if len(doc.RecentRuns) != len(runs) {
				t.Fatalf("recentRuns = %+v, want the ledger's %d rows", doc.RecentRuns, len(runs))
			}
			for i, r := range doc.RecentRuns {
				l := runs[i]
				if r.Job != l.Job || !sameTime(&r.Slot, l.Slot) || r.Status != jobs.StatusSucceeded || r.Holder != l.Holder || !strings.HasPrefix(r.Holder, "backfill:") ||
					r.Fence != l.Fence || r.Attempts != l.Attempts || !sameTime(r.StartedAt, *l.StartedAt) || !sameTime(r.FinishedAt, *l.FinishedAt) || r.Error != "" {
					t.Errorf("recentRuns[%d] = %+v, want the ledger's row %+v", i, r, l)
				}
			}

			// -o table is the table status prints by default.
			_, table, _ := execute(t, nil, append(args, "-o", "table")...)
			_, plain, _ := execute(t, nil, args...)
			if table != plain || !strings.HasPrefix(plain, "LEADERSHIP\n") {
				t.Errorf("-o table printed\n%s\nthe default printed\n%s", table, plain)
			}
		})
	}
}

// TestVerifyDocumentAndExitCodes: verify exits 0 when it checked and found
// nothing, 1 when it found something (the document still lists what), and 3
// when it could not check; -o json and yaml list what it checked and every
// finding, on every dialect.
func TestVerifyDocumentAndExitCodes(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn := testenv.DSN(t, dialect)
			flags := []string{"--database-dsn", dsn, "--timezone", "UTC", "--log-level", "error"}
			run := commandRunner(t, flags...)
			run(ExitOK, "backfill", "daily-stats", "--from", "2026-01-01", "--to", "2026-01-05")
			rng := []string{"verify", "--from", "2026-01-01", "--to", "2026-01-05"}

			doc := documents[verifyDoc](t, nil, ExitOK, append(rng, flags...)...)
			tables := []string{"contribute", "visit_statistics", "like_statistics", "comment_statistics"}
			want := verifyDoc{
				Jobs: []verifiedJob{{
					Name:   "daily-stats",
					From:   utc(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
					To:     utc(time.Date(2026, 1, 5, 23, 59, 59, 999999999, time.UTC)),
					Tables: &verifiedTables{From: "2026-01-01", To: "2026-01-05", Names: tables},
				}},
				Findings: []finding{},
			}
			if !reflect.DeepEqual(doc, want) {
				t.Fatalf("verify of the filled range = %+v, want %+v", doc, want)
			}
			// Times are RFC 3339 in UTC, with the nanoseconds they have.
			if out := run(ExitOK, append(rng, "-o", "json")...); !strings.Contains(out, `"to": "2026-01-05T23:59:59.999999999Z"`) {
				t.Errorf("-o json does not write the range's end in UTC with nanoseconds:\n%s", out)
			}

			// A slot that failed for good, and a date missing from a table.
			db := testdb.Open(t, dsn)
			failed := time.Date(2026, 1, 3, 0, 0, 50, 0, time.UTC)
			if res := db.Model(&jobs.JobRun{}).Where("job = ? AND slot = ?", "daily-stats", failed).Update("status", jobs.StatusFailed); res.Error != nil || res.RowsAffected != 1 {
				t.Fatalf("mark the slot failed: %v (%d rows)", res.Error, res.RowsAffected)
			}
			if res := db.Exec("DELETE FROM like_statistics WHERE date = ?", "2026-01-04"); res.Error != nil || res.RowsAffected != 1 {
				t.Fatalf("delete a date: %v (%d rows)", res.Error, res.RowsAffected)
			}
			doc = documents[verifyDoc](t, nil, ExitFailure, append(rng, flags...)...)
			want.Findings = []finding{
				{Kind: findingSlot, Job: "daily-stats", Slot: utc(failed)},
				{Kind: findingMissing, Job: "daily-stats", Table: "like_statistics", Date: "2026-01-04"},
			}
			if !reflect.DeepEqual(doc, want) {
				t.Fatalf("verify with a failed slot and a missing date = %+v, want %+v", doc, want)
			}
			out := run(ExitFailure, rng...)
			for _, line := range []string{
				"job daily-stats: 1 slots from 2026-01-01T00:00:00Z to 2026-01-05T23:59:59Z without a succeeded run: 2026-01-03T00:00:50Z\n",
				"like_statistics: 1 missing dates: 2026-01-04\n",
			} {
				if !strings.Contains(out, line) || strings.Contains(out, "all checks passed") {
					t.Errorf("the table does not say %q:\n%s", line, out)
				}
			}

			// A database with no ledger: verify cannot check.
			empty := testenv.DSN(t, dialect)
			if dialect == "sqlite" {
				if err := os.WriteFile(strings.TrimPrefix(empty, "sqlite://"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, format := range []string{"table", "json", "yaml"} {
				code, stdout, stderr := execute(t, nil, "verify", "--database-dsn", empty, "-o", format, "--log-level", "error")
				if code != ExitNotChecked || stdout != "" || !strings.Contains(stderr, "has 'leasecron migrate' run?") || strings.Count(stderr, "\n") != 1 {
					t.Errorf("verify -o %s without a ledger: exit %d, want %d with one line on stderr\nstdout: %s\nstderr: %s", format, code, ExitNotChecked, stdout, stderr)
				}
			}
		})
	}
}

// TestVerifyDuplicatesDocument: the dates a legacy database holds twice are
// findings with their row counts.
func TestVerifyDuplicatesDocument(t *testing.T) {
	dsn := testenv.DSN(t, "mysql")
	loadLegacy(t, dsn, 2, 3)
	flags := []string{"--database-dsn", dsn, "--log-level", "error"}
	if code, _, _ := execute(t, nil, append([]string{"migrate"}, flags...)...); code != ExitFailure {
		t.Fatalf("migrate on duplicates: exit %d, want 1", code) // it creates the ledger, then refuses the tables
	}
	doc := documents[verifyDoc](t, nil, ExitFailure, append([]string{"verify"}, flags...)...)
	if len(doc.Jobs) != 1 || doc.Jobs[0].From != nil || doc.Jobs[0].Tables == nil || doc.Jobs[0].Tables.From != "2019-06-01" || doc.Jobs[0].Tables.To != "2019-06-02" {
		t.Fatalf("jobs = %+v, want daily-stats with no ledger rows and the tables checked from 2019-06-01 to 2019-06-02", doc.Jobs)
	}
	var want []finding
	for _, s := range dailystats.Stats() {
		for _, date := range []string{"2019-06-01", "2019-06-02"} {
			want = append(want, finding{Kind: findingDuplicate, Job: "daily-stats", Table: s.Table, Date: date, Rows: 3})
		}
	}
	if !reflect.DeepEqual(doc.Findings, want) {
		t.Fatalf("findings = %+v, want %+v", doc.Findings, want)
	}
}

// TestVerifyUnreachableDatabase: a database verify cannot reach is exit 3,
// in every format, with the DSN redacted and nothing on stdout.
func TestVerifyUnreachableDatabase(t *testing.T) {
	for _, format := range []string{"table", "json", "yaml"} {
		code, stdout, stderr := execute(t, nil, "verify", "--database-dsn", "mysql://app:hunter2@127.0.0.1:1/stats",
			"--database-connect-timeout", "200ms", "--log-level", "error", "-o", format)
		if code != ExitNotChecked || stdout != "" {
			t.Fatalf("-o %s: exit %d, stdout %q; want %d and nothing", format, code, stdout, ExitNotChecked)
		}
		if strings.Contains(stderr, "hunter2") || !strings.Contains(lastLine(stderr), "mysql://app:xxxxx@127.0.0.1:1/stats is unreachable after") {
			t.Fatalf("-o %s: stderr = %q, want the redacted DSN and 'unreachable'", format, stderr)
		}
	}
}

// TestVersionOutputs: version and --version print the same line; -o json
// and yaml add the Go version and platform.
func TestVersionOutputs(t *testing.T) {
	want := "leasecron " + version.Version + " (commit " + version.Commit + ")\n"
	for _, args := range [][]string{{"version"}, {"version", "-o", "table"}, {"--version"}} {
		code, stdout, stderr := execute(t, nil, args...)
		if code != ExitOK || stdout != want || stderr != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %q", args, code, stdout, stderr, want)
		}
	}
	doc := documents[versionDoc](t, nil, ExitOK, "version")
	if want := (versionDoc{Version: version.Version, Commit: version.Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}); doc != want {
		t.Fatalf("version document = %+v, want %+v", doc, want)
	}
}

// TestOutputFormatRefused: an unknown -o is bad input for every command that
// has it, refused before anything else is looked at (here: that there is no
// database).
func TestOutputFormatRefused(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		format string
	}{
		{[]string{"status", "-o", "xml"}, "xml"},
		{[]string{"verify", "-o", "xml"}, "xml"},
		{[]string{"jobs", "-o", "xml"}, "xml"},
		{[]string{"version", "-o", "xml"}, "xml"},
		{[]string{"status", "--output=JSON"}, "JSON"},
	} {
		dir := t.TempDir()
		t.Chdir(dir)
		code, stdout, stderr := execute(t, nil, tc.args...)
		if want := `leasecron: --output "` + tc.format + `" is not valid: use table, json or yaml` + "\n"; code != ExitUsage || stderr != want || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and only %q", tc.args, code, stdout, stderr, want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%v wrote %v", tc.args, entries)
		}
	}
}
