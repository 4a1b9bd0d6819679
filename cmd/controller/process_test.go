package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/metrics"
	"github.com/leasecron/leasecron/pkg/model"
)

// binary is the leasecron binary under test, built once by TestMain exactly
// as the Dockerfile builds it.
var binary string

func TestMain(m *testing.M) { testenv.MainWithLeasecron(m, &binary) }

// newFleet runs leasecron processes and merges their logs into one stream.
func newFleet(t *testing.T) *testenv.Fleet { return testenv.NewFleet(t, binary) }

func TestThreeProcessesOneLeaderExactlyOnce(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn := testenv.DSN(t, dialect)
			dir := t.TempDir()
			f := newFleet(t)
			args := []string{"run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"),
				"--database-dsn", dsn, "--schedule", "daily-stats=* * * * * *", "--timezone", "UTC",
				"--http-addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace-period", "5s"}
			for _, n := range []string{"p1", "p2", "p3"} {
				f.Start(n, args...)
			}
			isLeading := func(e testenv.Event) bool { return e.Msg == "leading" }
			first := f.Await(60*time.Second, "a leader", isLeading)
			// Let the leader run a few slots, and make sure nobody else leads.
			for i := 0; i < 3; i++ {
				e := f.Await(30*time.Second, "a slot", func(e testenv.Event) bool { return e.Msg == "slot succeeded" || isLeading(e) })
				if isLeading(e) {
					t.Fatalf("%s leads while %s leads", e.Proc, first.Proc)
				}
				if e.Proc != first.Proc {
					t.Fatalf("%s ran a slot, but %s leads", e.Proc, first.Proc)
				}
			}

			killed := time.Now()
			if err := f.Procs()[first.Proc].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			second := f.Await(30*time.Second, "a new leader", isLeading)
			takeover := second.At.Sub(killed)
			t.Logf("%s: takeover after kill -9 of %s by %s in %s", dialect, first.Proc, second.Proc, takeover)
			if second.Proc == first.Proc {
				t.Fatalf("killed process %s leads again", first.Proc)
			}
			if takeover > time.Second {
				t.Errorf("takeover took %s, want within a second", takeover)
			}
			// The new leader catches up and runs on: wait for a slot well
			// after the kill.
			f.Await(30*time.Second, "a slot after the takeover", func(e testenv.Event) bool {
				if e.Msg != "slot succeeded" || e.Proc != second.Proc {
					return false
				}
				s, _ := time.Parse(time.RFC3339, fmt.Sprint(e.Attrs["slot"]))
				return s.After(killed.Add(2 * time.Second))
			})

			f.Terminate(first.Proc)
			checkExactlyOnce(t, dsn)

			out, err := exec.Command(binary, "verify", "--database-dsn", dsn).CombinedOutput()
			if err != nil {
				t.Fatalf("leasecron verify: %v\n%s", err, out)
			}
		})
	}
}

// checkExactlyOnce asserts that every per-second slot from the first to the
// last has exactly one succeeded ledger row, and every table one row per date.
func checkExactlyOnce(t *testing.T, raw string) {
	t.Helper()
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := model.Open(ctx, dsn, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close(db)
	var runs []jobs.JobRun
	if err := db.Order("slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	if len(runs) < 5 {
		t.Fatalf("only %d slots ran", len(runs))
	}
	for i, r := range runs {
		if r.Status != jobs.StatusSucceeded {
			t.Errorf("slot %s is %s (%s)", r.Slot, r.Status, r.Error)
		}
		if i > 0 {
			if gap := r.Slot.Sub(runs[i-1].Slot); gap != time.Second {
				t.Errorf("slots %s and %s are %s apart: a slot was lost", runs[i-1].Slot, r.Slot, gap)
			}
		}
	}
	dates := map[model.Date]bool{}
	for _, r := range runs {
		dates[model.DateOf(r.Slot.UTC())] = true
	}
	for _, s := range dailystats.Stats() {
		var rows []struct {
			Date model.Date
			N    int64
		}
		if err := db.Raw("SELECT date, COUNT(*) AS n FROM " + s.Table + " GROUP BY date").Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(dates) {
			t.Errorf("%s has %d dates, want %d", s.Table, len(rows), len(dates))
		}
		for _, r := range rows {
			if r.N != 1 || !dates[r.Date] {
				t.Errorf("%s: %d rows for %s", s.Table, r.N, r.Date)
			}
		}
	}
	t.Logf("%d slots, each exactly once; holders: %s", len(runs), holders(runs))
}

func holders(runs []jobs.JobRun) string {
	seen := map[string]int{}
	for _, r := range runs {
		seen[r.Holder]++
	}
	var parts []string
	for h, n := range seen {
		parts = append(parts, fmt.Sprintf("%s=%d", h, n))
	}
	return strings.Join(parts, " ")
}

// TestDatabaseOutage stops MariaDB for 20 seconds under a per-second
// schedule: the leader's /readyz fails while the database is away and
// recovers after, the slot that met the outage is retried until it commits,
// the slots that came due meanwhile are caught up, and every slot still runs
// exactly once.
func TestDatabaseOutage(t *testing.T) {
	const outage = 20 * time.Second
	srv := testenv.MySQLServer(t)
	dsn := testenv.DSN(t, "mysql")
	dir := t.TempDir()
	f := newFleet(t)
	args := []string{"run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"),
		"--database-dsn", dsn, "--schedule", "daily-stats=* * * * * *", "--timezone", "UTC",
		"--http-addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace-period", "5s"}
	addr := map[string]string{}
	for _, n := range []string{"p1", "p2"} { // p1 leads: it starts first, p2 waits for its lock
		f.Start(n, args...)
		e := f.Await(60*time.Second, n+"'s http address", func(e testenv.Event) bool { return e.Proc == n && e.Msg == "http server listening" })
		addr[n] = fmt.Sprint(e.Attrs["addr"])
		if n == "p1" {
			f.Await(60*time.Second, "p1 to lead", func(e testenv.Event) bool { return e.Proc == n && e.Msg == "leading" })
		}
	}
	const leaderName = "p1"
	f.Await(30*time.Second, "a slot", func(e testenv.Event) bool { return e.Msg == "slot succeeded" })

	ready := func(n string) bool {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + addr[n] + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	awaitReady := func(n string, want bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for ready(n) != want {
			if time.Now().After(deadline) {
				t.Fatalf("/readyz of %s never became %v", n, want)
			}
			time.Sleep(100 * time.Millisecond) // polling a condition, not standing in for it
		}
	}

	ctx := context.Background()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	awaitReady(leaderName, false)
	f.Await(30*time.Second, "a failed attempt", func(e testenv.Event) bool { return e.Msg == "slot attempt failed, retrying" })
	time.Sleep(time.Until(stopped.Add(outage))) // the outage itself: how long the database stays away
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	awaitReady(leaderName, true)
	t.Logf("database away for %s; /readyz recovered %s after the restart", restarted.Sub(stopped).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	f.Await(60*time.Second, "a slot after the outage", func(e testenv.Event) bool {
		if e.Msg != "slot succeeded" {
			return false
		}
		s, _ := time.Parse(time.RFC3339, fmt.Sprint(e.Attrs["slot"]))
		return s.After(restarted.Add(time.Second))
	})
	for _, p := range f.Procs() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	for n, p := range f.Procs() {
		<-p.Done
		if c := p.Cmd.ProcessState.ExitCode(); c != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0", n, c)
		}
	}
	checkExactlyOnce(t, dsn)
}

// TestUnreachableDatabaseHidesTheSecret runs `leasecron run` and `migrate`
// against a closed port with the secret in every place a DSN can carry one:
// the warning logged on each retry and the exit error name the database,
// redacted, and never show the secret.
func TestUnreachableDatabaseHidesTheSecret(t *testing.T) {
	const secret = "s3cret-Pa55"
	forms := map[string]string{
		"postgres query password":    "postgres://app@127.0.0.1:1/app?sslmode=disable&password=" + secret,
		"postgres user password":     "postgres://app:" + secret + "@127.0.0.1:1/app?sslmode=disable",
		"postgres query sslpassword": "postgresql://app@127.0.0.1:1/app?sslmode=disable&sslpassword=" + secret,
		"mysql user password":        "mysql://app:" + secret + "@127.0.0.1:1/app",
		"mysql driver form":          "mysql://app:" + secret + "@tcp(127.0.0.1:1)/app",
	}
	for name, dsn := range forms {
		for _, verb := range []string{"run", "migrate"} {
			t.Run(name+"/"+verb, func(t *testing.T) {
				dir := t.TempDir()
				// The DSN comes from a file, as from a mounted Secret, for
				// migrate, and from the command line for run.
				dsnArgs := []string{"--database-dsn", dsn}
				if verb == "migrate" {
					file := filepath.Join(dir, "dsn")
					if err := os.WriteFile(file, []byte(dsn+"\n"), 0o600); err != nil {
						t.Fatal(err)
					}
					dsnArgs = []string{"--database-dsn-file", file}
				}
				args := append([]string{verb, "--database-connect-timeout", "600ms", "--log-format", "json"}, dsnArgs...)
				if verb == "run" {
					args = append(args, "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"), "--http-addr", "127.0.0.1:0")
				}
				f := newFleet(t)
				p := f.Start("p", args...)
				warn := f.Await(30*time.Second, "the unreachable warning", func(e testenv.Event) bool { return e.Msg == "database unreachable, retrying" })
				if shown := fmt.Sprint(warn.Attrs["dsn"]); !strings.Contains(shown, "xxxxx") || !strings.Contains(shown, "127.0.0.1:1") {
					t.Errorf("warning names the database as %q, want it redacted", shown)
				}
				if d, err := time.ParseDuration(fmt.Sprint(warn.Attrs["retry_in"])); err != nil || d <= 0 {
					t.Errorf("retry_in = %#v, want a duration such as \"250ms\"", warn.Attrs["retry_in"])
				}
				<-p.Done
				if code := p.Cmd.ProcessState.ExitCode(); code != 1 {
					t.Errorf("exit code %d, want 1", code)
				}
				logs := f.Logs()
				lines := strings.Split(strings.TrimRight(logs, "\n"), "\n")
				if last := lines[len(lines)-1]; !strings.Contains(last, "is unreachable after") || !strings.Contains(last, "xxxxx") {
					t.Errorf("exit error = %q, want the redacted database and 'is unreachable after'", last)
				}
				if strings.Contains(logs, secret) {
					t.Fatalf("the secret is shown:\n%s", logs)
				}
			})
		}
	}
}

// TestMetricsScrapedShape scrapes /metrics of a running controller as
// Prometheus would and checks the shape of its series: none carries "job"
// (Prometheus's own target label, which would rename ours to
// "exported_job"), and every per-job family names the job in
// metrics.JobLabel.
func TestMetricsScrapedShape(t *testing.T) {
	dir := t.TempDir()
	f := newFleet(t)
	f.Start("p1", "run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"),
		"--database-dsn", testenv.DSN(t, "sqlite"), "--schedule", "daily-stats=* * * * * *", "--timezone", "UTC",
		"--http-addr", "127.0.0.1:0", "--log-format", "json")
	addr := fmt.Sprint(f.Await(60*time.Second, "the http address", func(e testenv.Event) bool { return e.Msg == "http server listening" }).Attrs["addr"])
	// A slot's metrics are set after its log line and before the next slot
	// starts: after the second slot, the first one's series are all there.
	for i := 0; i < 2; i++ {
		f.Await(30*time.Second, "a slot", func(e testenv.Event) bool { return e.Msg == "slot succeeded" })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fams, err := testenv.ScrapeMetrics(ctx, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			if _, ok := testenv.LabelValue(m, "job"); ok {
				t.Errorf("%s has a series with the label job (%v): Prometheus would rename it exported_job", name, m.GetLabel())
			}
		}
	}
	for _, name := range []string{
		"leasecron_job_runs_total", "leasecron_job_slots_total", "leasecron_job_duration_seconds",
		"leasecron_job_last_success_timestamp_seconds", "leasecron_missed_slots_total", "leasecron_caught_up_slots_total",
	} {
		found := false
		for _, m := range fams[name].GetMetric() {
			if v, _ := testenv.LabelValue(m, metrics.JobLabel); v == "daily-stats" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s has no series with %s=\"daily-stats\": %v", name, metrics.JobLabel, fams[name].GetMetric())
		}
	}
}
