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
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
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
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.Open(context.Background(), dsn, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close(db)
	var runs []jobs.JobRun
	if err := db.Where("job = ?", job).Order("slot").Find(&runs).Error; err != nil {
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
