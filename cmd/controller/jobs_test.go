package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/testdb"
	"github.com/leasecron/leasecron/pkg/jobs"
)

// writeJobs replaces the jobs file at path as an editor or a ConfigMap
// volume does: a new file renamed over the old one.
func writeJobs(t *testing.T, path string, docs ...string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(docs, "---\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// httpJob is a jobs-file document of a per-second (or expr) http job that
// calls the receiver at /<name>.
func httpJob(name, expr, url string, suspend bool) string {
	return fmt.Sprintf(`apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: %s}
spec:
  schedule: %q
  suspend: %t
  retries: {limit: 1}
  http: {url: "%s/%s", body: "{{.Key}}"}
`, name, expr, suspend, url, name)
}

// ledgerSlots returns the succeeded slots of job, oldest first.
func ledgerSlots(t *testing.T, raw, job string) []time.Time {
	t.Helper()
	var runs []jobs.JobRun
	if err := testdb.Open(t, raw).Where("job = ?", job).Order("slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	var out []time.Time
	for _, r := range runs {
		if r.Status == jobs.StatusSucceeded {
			out = append(out, r.Slot.UTC())
		}
	}
	return out
}

func slotOf(e testenv.Event) time.Time {
	s, _ := time.Parse(time.RFC3339, fmt.Sprint(e.Attrs["slot"]))
	return s
}

func succeeded(job string) func(testenv.Event) bool {
	return func(e testenv.Event) bool { return e.Msg == "slot succeeded" && e.Attrs["job"] == job }
}

// TestJobsFileLiveEdits: while `run` leads, the jobs file is edited — a job
// added, a schedule changed, a job suspended and resumed, one removed, and a
// broken edit — and each edit applies without a restart; the broken one
// keeps the last good set running, is logged once and shows in a metric.
func TestJobsFileLiveEdits(t *testing.T) {
	dir := t.TempDir()
	rc := testenv.NewReceiver(t, nil)
	file := filepath.Join(dir, "jobs.yaml")
	dsn := "sqlite://" + filepath.Join(dir, "leasecron.db")
	writeJobs(t, file, httpJob("a", "* * * * * *", rc.URL(), false))
	f := newFleet(t)
	p := f.Start("only", "run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "l.lock"),
		"--database-dsn", dsn, "--jobs-file", file, "--http-addr", "127.0.0.1:0", "--log-format", "json")
	addr := f.Await(30*time.Second, "the http address", func(e testenv.Event) bool { return e.Msg == "http server listening" }).Attrs["addr"]
	applied := func(what string) testenv.Event {
		return f.Await(10*time.Second, what, func(e testenv.Event) bool { return e.Msg == "jobs file applied" })
	}
	invalid := func() float64 {
		fams, err := testenv.ScrapeMetrics(context.Background(), fmt.Sprintf("http://%s/metrics", addr))
		if err != nil {
			t.Fatal(err)
		}
		return fams["leasecron_jobs_file_invalid"].GetMetric()[0].GetGauge().GetValue()
	}
	f.Await(30*time.Second, "a slot of a", succeeded("a"))

	// Add b.
	writeJobs(t, file, httpJob("a", "* * * * * *", rc.URL(), false), httpJob("b", "* * * * * *", rc.URL(), false))
	if e := applied("b added"); e.Attrs["added"] != "b" {
		t.Fatalf("applied %v, want b added", e.Attrs)
	}
	f.Await(10*time.Second, "a slot of b", succeeded("b"))

	// Change a to every other second: from the change on, only even seconds.
	writeJobs(t, file, httpJob("a", "*/2 * * * * *", rc.URL(), false), httpJob("b", "* * * * * *", rc.URL(), false))
	changedAt := applied("a changed").At
	for i := 0; i < 2; i++ {
		e := f.Await(10*time.Second, "a slot of a on its new schedule", func(e testenv.Event) bool {
			return succeeded("a")(e) && slotOf(e).After(changedAt.Add(time.Second))
		})
		if s := slotOf(e); s.Second()%2 != 0 {
			t.Fatalf("a ran %s after its change to every other second", s)
		}
	}

	// Suspend b: no new slot of b.
	writeJobs(t, file, httpJob("a", "*/2 * * * * *", rc.URL(), false), httpJob("b", "* * * * * *", rc.URL(), true))
	suspendedAt := applied("b suspended").At
	f.Await(10*time.Second, "a slot of a two seconds on", func(e testenv.Event) bool {
		return succeeded("a")(e) && slotOf(e).After(suspendedAt.Add(2*time.Second))
	})
	for _, s := range ledgerSlots(t, dsn, "b") {
		if s.After(suspendedAt.Add(time.Second)) {
			t.Fatalf("b ran %s while suspended (since %s)", s, suspendedAt)
		}
	}

	// Remove a, resume b.
	writeJobs(t, file, httpJob("b", "* * * * * *", rc.URL(), false))
	removedAt := applied("a removed, b resumed").At
	f.Await(10*time.Second, "a slot of b after resume", func(e testenv.Event) bool {
		return succeeded("b")(e) && slotOf(e).After(removedAt)
	})

	// A broken edit: reported once, the last good set keeps running.
	writeJobs(t, file, "apiVersion: leasecron.io/v1alpha1\nkind: ScheduledJob\nmetadata: {name: c}\nspec: {schedule: 'every day'}\n")
	brokenAt := f.Await(10*time.Second, "the broken edit reported", func(e testenv.Event) bool { return strings.HasPrefix(e.Msg, "jobs file not applied") }).At
	for i := 0; i < 3; i++ { // three more polls of the file, not reported again
		f.Await(10*time.Second, "b running on", func(e testenv.Event) bool {
			if strings.HasPrefix(e.Msg, "jobs file not applied") {
				t.Errorf("the broken edit was reported again")
			}
			return succeeded("b")(e) && slotOf(e).After(brokenAt)
		})
	}
	if v := invalid(); v != 1 {
		t.Errorf("leasecron_jobs_file_invalid = %v after a broken edit, want 1", v)
	}
	writeJobs(t, file, httpJob("b", "* * * * * *", rc.URL(), false), httpJob("c", "@daily", rc.URL(), false))
	if e := applied("the fix"); e.Attrs["added"] != "c" {
		t.Fatalf("applied %v, want c added", e.Attrs)
	}
	if v := invalid(); v != 0 {
		t.Errorf("leasecron_jobs_file_invalid = %v after the fix, want 0", v)
	}

	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	<-p.Done
	if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if n := len(f.Procs()); n != 1 {
		t.Fatalf("%d processes: the edits must not need a restart", n)
	}
	for _, s := range ledgerSlots(t, dsn, "a") {
		if s.After(removedAt.Add(time.Second)) {
			t.Errorf("a ran %s after its removal at %s", s, removedAt)
		}
		if s.After(changedAt.Add(time.Second)) && s.Second()%2 != 0 {
			t.Errorf("a ran %s, not on its new schedule", s)
		}
	}
	// Every delivery was recorded once: each key has one succeeded row.
	for _, job := range []string{"a", "b"} {
		done := map[string]bool{}
		for _, s := range ledgerSlots(t, dsn, job) {
			done[jobs.SlotKey(job, s)] = true
		}
		for key := range testenv.PerKey(rc.Deliveries("/" + job)) {
			if !done[key] {
				t.Errorf("%s was delivered but has no succeeded row", key)
			}
		}
	}
}

// TestJobsExactlyOnceAcrossKill: three `run` processes share a lock file and
// a jobs file with a per-second sql job whose work is not idempotent
// (n = n + 1) and a per-second http job; the leader is killed with -9. After
// the takeover and catch-up, n equals the sql job's succeeded slots, every
// slot of both jobs from the first to the last has one succeeded row, and
// the test's receiver saw every http slot at least once, with duplicates only
// under the same key.
func TestJobsExactlyOnceAcrossKill(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn := testenv.DSN(t, dialect)
			db := testdb.Open(t, dsn)
			if err := db.Exec("CREATE TABLE counters (name VARCHAR(32) PRIMARY KEY, n INTEGER NOT NULL)").Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Exec("INSERT INTO counters (name, n) VALUES ('tick', 0)").Error; err != nil {
				t.Fatal(err)
			}
			rc := testenv.NewReceiver(t, nil)
			dir := t.TempDir()
			file := filepath.Join(dir, "jobs.yaml")
			writeJobs(t, file, `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: tick}
spec:
  schedule: "* * * * * *"
  sql:
    statements: ["UPDATE counters SET n = n + 1 WHERE name = 'tick'"]
`, httpJob("hook", "* * * * * *", rc.URL(), false))
			f := newFleet(t)
			args := []string{"run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"),
				"--database-dsn", dsn, "--jobs-file", file, "--timezone", "UTC",
				"--http-addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace-period", "5s"}
			for _, n := range []string{"p1", "p2", "p3"} {
				f.Start(n, args...)
			}
			isLeading := func(e testenv.Event) bool { return e.Msg == "leading" }
			first := f.Await(60*time.Second, "a leader", isLeading)
			for i := 0; i < 4; i++ {
				f.Await(30*time.Second, "a slot", func(e testenv.Event) bool { return e.Msg == "slot succeeded" })
			}
			killed := time.Now()
			if err := f.Procs()[first.Proc].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			second := f.Await(30*time.Second, "a new leader", isLeading)
			if second.Proc == first.Proc {
				t.Fatalf("killed process %s leads again", first.Proc)
			}
			for _, job := range []string{"tick", "hook"} {
				f.Await(30*time.Second, "a slot of "+job+" after the takeover", func(e testenv.Event) bool {
					return succeeded(job)(e) && e.Proc == second.Proc && slotOf(e).After(killed.Add(2*time.Second))
				})
			}
			f.Terminate(first.Proc)

			var runs []jobs.JobRun
			if err := db.Order("job, slot").Find(&runs).Error; err != nil {
				t.Fatal(err)
			}
			done := map[string][]time.Time{}
			for _, r := range runs {
				if r.Status != jobs.StatusSucceeded {
					t.Errorf("%s slot %s is %s (%s)", r.Job, r.Slot, r.Status, r.Error)
					continue
				}
				done[r.Job] = append(done[r.Job], r.Slot.UTC())
			}
			for _, job := range []string{"tick", "hook"} {
				slots := done[job]
				if len(slots) < 5 {
					t.Fatalf("%s ran only %d slots", job, len(slots))
				}
				for i := 1; i < len(slots); i++ {
					if gap := slots[i].Sub(slots[i-1]); gap != time.Second {
						t.Errorf("%s slots %s and %s are %s apart: a slot was lost", job, slots[i-1], slots[i], gap)
					}
				}
			}
			var n int64
			if err := db.Raw("SELECT n FROM counters WHERE name = 'tick'").Scan(&n).Error; err != nil {
				t.Fatal(err)
			}
			if n != int64(len(done["tick"])) {
				t.Errorf("counter n = %d, but %d slots succeeded: the sql job's effect ran other than once per slot", n, len(done["tick"]))
			}
			perKey := testenv.PerKey(rc.Deliveries("/hook"))
			recorded := map[string]bool{}
			for _, s := range done["hook"] {
				key := jobs.SlotKey("hook", s)
				recorded[key] = true
				if perKey[key] == 0 {
					t.Errorf("slot %s succeeded, but the receiver never saw %s", s, key)
				}
			}
			again := 0
			for key, c := range perKey {
				if !recorded[key] {
					t.Errorf("the receiver saw %s, which has no succeeded slot", key)
				}
				if c > 1 {
					again++
				}
			}
			for _, d := range rc.Deliveries("/hook") {
				if d.Body != d.Key() {
					t.Errorf("delivery with key %q carries body %q: a duplicate under another key", d.Key(), d.Body)
				}
			}
			t.Logf("%s: %s killed, %s took over; tick n = %d over %d slots; hook: %d slots, %d deliveries, %d keys delivered more than once",
				dialect, first.Proc, second.Proc, n, len(done["tick"]), len(done["hook"]), len(rc.Deliveries("/hook")), again)
		})
	}
}

// TestSlowJobBesideFastJob: a 5-second sql job runs beside a per-second one;
// the per-second job misses no slot and starts each before the next is due,
// while the slow job runs (jobs run side by side; the slow one holds no lock
// the other needs). SQLite runs work in the ledger's transaction one job at a
// time, so this runs on the servers.
func TestSlowJobBesideFastJob(t *testing.T) {
	for _, tc := range []struct{ dialect, sleep string }{{"mysql", "SELECT SLEEP(5)"}, {"postgres", "SELECT pg_sleep(5)"}} {
		t.Run(tc.dialect, func(t *testing.T) {
			dsn := testenv.DSN(t, tc.dialect)
			db := testdb.Open(t, dsn)
			if err := db.Exec("CREATE TABLE ticks (slot VARCHAR(32) PRIMARY KEY)").Error; err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			file := filepath.Join(dir, "jobs.yaml")
			writeJobs(t, file, fmt.Sprintf(`apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: slow}
spec:
  schedule: "*/6 * * * * *"
  timeout: 30s
  sql: {statements: [%q]}
`, tc.sleep), `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: fast}
spec:
  schedule: "* * * * * *"
  sql: {statements: ["INSERT INTO ticks (slot) VALUES (@key)"]}
`)
			f := newFleet(t)
			p := f.Start("only", "run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "l.lock"),
				"--database-dsn", dsn, "--jobs-file", file, "--http-addr", "127.0.0.1:0", "--log-format", "json")
			// The first slow slot may be one from before the start; measure
			// from the second, through the third's end: the slow job runs 10
			// of those 11 seconds.
			first := f.Await(30*time.Second, "the slow job's slot", succeeded("slow"))
			second := f.Await(30*time.Second, "the next slow slot", func(e testenv.Event) bool {
				return succeeded("slow")(e) && slotOf(e).After(slotOf(first))
			})
			third := f.Await(30*time.Second, "the third slow slot", func(e testenv.Event) bool {
				return succeeded("slow")(e) && slotOf(e).After(slotOf(second))
			})
			_ = p.Cmd.Process.Signal(syscall.SIGTERM)
			<-p.Done
			var runs []jobs.JobRun
			if err := db.Where("job = ?", "fast").Order("slot").Find(&runs).Error; err != nil {
				t.Fatal(err)
			}
			from, to := slotOf(second), slotOf(third).Add(5*time.Second)
			checked := 0
			for i, r := range runs {
				if r.Slot.Before(from) || r.Slot.After(to) {
					continue
				}
				checked++
				if r.Status != jobs.StatusSucceeded {
					t.Errorf("fast slot %s is %s", r.Slot, r.Status)
				}
				if i > 0 && r.Slot.Sub(runs[i-1].Slot) != time.Second {
					t.Errorf("fast slots %s and %s: a slot was missed", runs[i-1].Slot, r.Slot)
				}
				if lag := r.StartedAt.Sub(r.Slot); lag >= time.Second {
					t.Errorf("fast slot %s started %s late, after its next slot was due", r.Slot, lag)
				}
			}
			if checked < 10 {
				t.Fatalf("only %d fast slots while the slow job ran", checked)
			}
		})
	}
}

// TestCommandJob: with --allow-command-jobs, a per-second command job runs
// once per slot as a child of the leader, with the slot's key in its
// environment, and its output goes to the log with the job and slot.
func TestCommandJob(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "keys")
	file := filepath.Join(dir, "jobs.yaml")
	writeJobs(t, file, `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: stamp}
spec:
  schedule: "* * * * * *"
  command:
    args: [sh, -c, 'echo "$LEASECRON_KEY" >> "$OUT"; echo "ran $LEASECRON_JOB"']
    env: [{name: OUT, value: "`+out+`"}]
`)
	dsn := "sqlite://" + filepath.Join(dir, "leasecron.db")
	f := newFleet(t)
	f.Start("only", "run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "l.lock"), "--allow-command-jobs",
		"--database-dsn", dsn, "--jobs-file", file, "--http-addr", "127.0.0.1:0", "--log-format", "json")
	f.Await(30*time.Second, "the command's output in the log", func(e testenv.Event) bool {
		return e.Msg == "ran stamp" && e.Attrs["job"] == "stamp" && e.Attrs["stream"] == "stdout" && e.Attrs["slot"] != nil
	})
	for i := 0; i < 3; i++ {
		f.Await(30*time.Second, "a slot of stamp", succeeded("stamp"))
	}
	f.Terminate()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	slots := ledgerSlots(t, dsn, "stamp")
	if len(lines) != len(slots) || len(slots) < 3 {
		t.Fatalf("%d runs of the command for %d succeeded slots", len(lines), len(slots))
	}
	for i, s := range slots {
		if lines[i] != jobs.SlotKey("stamp", s) {
			t.Errorf("run %d wrote %q, want the key of slot %s", i, lines[i], s)
		}
	}
}
