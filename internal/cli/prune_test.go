package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/testdb"
	"github.com/leasecron/leasecron/pkg/jobs"
)

// TestPrunedHistoryIsNotRunAgain: once the leader has pruned a job's old
// ledger rows, once and backfill refuse a pruned slot with one line and
// exit 2, writing nothing; a backfill after the horizon still works; and
// verify checks from the horizon on (it cannot see pruned successes) and
// says where history ends.
func TestPrunedHistoryIsNotRunAgain(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn := testenv.DSN(t, dialect)
			flags := []string{"--database-dsn", dsn, "--timezone", "UTC", "--log-level", "error"}
			run := commandRunner(t, flags...)
			run(ExitOK, "backfill", "daily-stats", "--from", "2026-01-01", "--to", "2026-01-10")

			// What the leader's pruner does with a retention that ends at
			// the slot of 2026-01-06.
			db := testdb.Open(t, dsn)
			ctx := context.Background()
			l := jobs.NewLedger(db, "leader")
			f, err := l.BeginTerm(ctx, "leasecron")
			if err != nil {
				t.Fatal(err)
			}
			if n, err := l.Prune(ctx, f, "daily-stats", time.Date(2026, 1, 6, 0, 0, 50, 0, time.UTC), 100); err != nil || n != 5 {
				t.Fatalf("prune = %d, %v; want 5 rows", n, err)
			}
			rows := func() (n int64) {
				if err := db.Model(&jobs.JobRun{}).Count(&n).Error; err != nil {
					t.Fatal(err)
				}
				return n
			}
			before := rows()

			for _, tc := range []struct {
				args []string
				want string
			}{
				{[]string{"backfill", "daily-stats", "--from", "2026-01-01", "--to", "2026-01-10"},
					"job daily-stats: 5 slots from 2026-01-01T00:00:50Z to 2026-01-05T00:00:50Z have no ledger row and its history through 2026-01-05T00:00:50Z was pruned (historyRetention, --history-retention), so leasecron cannot tell whether they ran and does not run them again: backfill from --from 2026-01-06 or later"},
				{[]string{"once", "daily-stats", "--date", "2026-01-03"},
					"job daily-stats: the slot 2026-01-03T00:00:50Z has no ledger row and its history through 2026-01-05T00:00:50Z was pruned (historyRetention, --history-retention), so leasecron cannot tell whether they ran and does not run them again: give a --date from 2026-01-06 on"},
			} {
				code, stdout, stderr := execute(t, nil, append(tc.args, flags...)...)
				if code != ExitUsage || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) {
					t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and the one line %q", tc.args, code, stdout, stderr, tc.want)
				}
			}
			if n := rows(); n != before {
				t.Errorf("the refused commands wrote %d ledger rows", n-before)
			}

			out := run(ExitOK, "backfill", "daily-stats", "--from", "2026-01-06", "--to", "2026-01-11")
			if !strings.Contains(out, "6 slots from 2026-01-06 to 2026-01-11: 1 succeeded, 5 already done, 0 failed") {
				t.Errorf("backfill after the horizon said %q", out)
			}
			out = run(ExitOK, "verify", "--from", "2026-01-01", "--to", "2026-01-11", "-o", "json")
			var doc verifyDoc
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("verify -o json: %v\n%s", err, out)
			}
			var stats verifiedJob
			for _, j := range doc.Jobs {
				if j.Name == "daily-stats" {
					stats = j
				}
			}
			if h := stats.PrunedThrough; h == nil || !h.Equal(time.Date(2026, 1, 5, 0, 0, 50, 0, time.UTC)) ||
				stats.From == nil || !stats.From.Equal(time.Date(2026, 1, 5, 0, 0, 51, 0, time.UTC)) {
				t.Errorf("verify checked %+v: want prunedThrough 2026-01-05T00:00:50Z and from the second after", stats)
			}
			out = run(ExitOK, "verify", "--from", "2026-01-01", "--to", "2026-01-11")
			if !strings.Contains(out, "job daily-stats: ok (every slot from 2026-01-05T00:00:51Z to 2026-01-11T23:59:59Z (history through 2026-01-05T00:00:50Z pruned) succeeded)") {
				t.Errorf("verify said %q", out)
			}
		})
	}
}
