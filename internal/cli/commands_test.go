package cli

import (
	"strings"
	"testing"

	"github.com/leasecron/leasecron/internal/testenv"
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
			db := []string{"--database-dsn", testenv.DSN(t, dialect), "--timezone", "Asia/Shanghai", "--log-level", "error"}
			run := func(want int, args ...string) string {
				t.Helper()
				code, stdout, stderr := execute(t, nil, append(args, db...)...)
				if code != want {
					t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, stdout, stderr)
				}
				return stdout
			}
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
