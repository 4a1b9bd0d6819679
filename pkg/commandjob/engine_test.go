//go:build linux

// The engine tests need testenv's database servers, and testenv builds on
// Linux only.

package commandjob_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/enginetest"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

func forEachDialect(t *testing.T, f func(t *testing.T, dialect string)) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) { f(t, d) })
	}
}

func openDB(t *testing.T, dialect string) *gorm.DB { return enginetest.OpenDB(t, dialect) }

// engine is a scheduler of one command job on a fresh database, leading.
// The scheduler and the command log to the same sink.
type engine struct {
	db    *gorm.DB
	sched *jobs.Scheduler
	fence jobs.Fence
	log   *logSink
}

func newEngine(t *testing.T, dialect string, sj *spec.ScheduledJob, env spec.Env) *engine {
	t.Helper()
	e := &engine{db: openDB(t, dialect), log: newLogSink()}
	env.Log = e.log.logger()
	def := definition(t, sj, env)
	e.sched = newScheduler(t, e.db, def, e.log)
	f, err := e.sched.Ledger().BeginTerm(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	e.fence = f
	return e
}

func newScheduler(t *testing.T, db *gorm.DB, def jobs.Definition, log io.Writer) *jobs.Scheduler {
	return enginetest.Scheduler(t, db, "holder", def, slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// runAt runs the slot at under the engine's fence.
func (e *engine) runAt(t *testing.T, at time.Time) (jobs.Outcome, error) {
	return enginetest.RunAt(t, e.sched, e.fence, jobName, at)
}

// rows returns the ledger's rows of the test's job.
func rows(t *testing.T, db *gorm.DB) []jobs.JobRun { return enginetest.Rows(t, db, jobName) }

// onlyRow returns the ledger's one row of the test's slot.
func onlyRow(t *testing.T, db *gorm.DB) jobs.JobRun {
	t.Helper()
	rs := rows(t, db)
	if len(rs) != 1 || !rs[0].Slot.Equal(slot) {
		t.Fatalf("ledger rows = %+v, want one, of slot %s", rs, slot)
	}
	return rs[0]
}

// fileLines returns the lines of the file at path (none if it is absent).
func fileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// appendKey is a command that appends its key (and attempt) to $OUT.
func appendKey(out, more string) *spec.Command {
	return &spec.Command{
		Args: []string{"sh", "-c", `echo "$LEASECRON_KEY $LEASECRON_ATTEMPT" >> "$OUT"` + more},
		Env:  []spec.EnvVar{{Name: "OUT", Value: out}},
	}
}

// A command that appends its key to a file writes one line per slot: a
// slot that is done is skipped, without running the program again; the
// ledger records each slot succeeded.
func TestEngineRunsEachSlotOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		out := filepath.Join(t.TempDir(), "keys")
		e := newEngine(t, dialect, newJob(appendKey(out, "")), spec.Env{})
		if got, err := e.runAt(t, slot); err != nil || got != jobs.Succeeded {
			t.Fatalf("RunSlot = %v, %v; want succeeded (log:\n%s)", got, err, e.log)
		}
		if got, err := e.runAt(t, slot); err != nil || got != jobs.Skipped {
			t.Fatalf("second RunSlot = %v, %v; want skipped", got, err)
		}
		next := slot.AddDate(0, 0, 1)
		if got, err := e.runAt(t, next); err != nil || got != jobs.Succeeded {
			t.Fatalf("RunSlot of the next slot = %v, %v; want succeeded", got, err)
		}
		want := []string{slotKey + " 1", jobs.SlotKey(jobName, next) + " 1"}
		if got := fileLines(t, out); !slices.Equal(got, want) {
			t.Fatalf("the file holds %q, want %q: one line per slot", got, want)
		}
		rs := rows(t, e.db)
		if len(rs) != 2 || rs[0].Status != jobs.StatusSucceeded || rs[1].Status != jobs.StatusSucceeded {
			t.Fatalf("ledger rows = %+v, want two succeeded", rs)
		}
	})
}

// A failing command's slot is recorded failed, with the status and the end
// of the output, and without the secrets the program wrote, which the log
// does not show either.
func TestEngineRecordsFailureRedacted(t *testing.T) {
	const (
		fileSecret = "file-secret-7f3a"
		envSecret  = "env-secret-0d5e"
	)
	forEachDialect(t, func(t *testing.T, dialect string) {
		secret := writeFile(t, "secret", fileSecret+"\n", 0o600)
		e := newEngine(t, dialect, newJob(&spec.Command{
			Args: []string{"sh", "-c", `echo "connecting with $TOKEN"; echo "refused for $API_KEY" >&2; exit 4`},
			Env:  []spec.EnvVar{{Name: "TOKEN", File: secret}, {Name: "API_KEY", Env: "COMMANDJOB_SECRET"}},
		}), spec.Env{LookupEnv: lookup(map[string]string{"PATH": os.Getenv("PATH"), "COMMANDJOB_SECRET": envSecret})})
		if got, err := e.runAt(t, slot); err != nil || got != jobs.Failed {
			t.Fatalf("RunSlot = %v, %v; want failed", got, err)
		}
		row := onlyRow(t, e.db)
		if row.Status != jobs.StatusFailed || !strings.HasPrefix(row.Error, "command exited with status 4: ") ||
			!strings.Contains(row.Error, "connecting with [redacted]") || !strings.Contains(row.Error, "refused for [redacted]") {
			t.Fatalf("ledger row = %s %q, want failed with status 4 and the output, redacted", row.Status, row.Error)
		}
		for _, s := range []string{fileSecret, envSecret} {
			if strings.Contains(row.Error, s) {
				t.Errorf("ledger error shows %q: %q", s, row.Error)
			}
			if strings.Contains(e.log.String(), s) {
				t.Errorf("log shows %q:\n%s", s, e.log)
			}
		}
	})
}

// A command that fails twice runs three times, every attempt with the same
// key, and the ledger holds one succeeded row after three attempts.
func TestEngineRetriesCarryTheSameKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		out := filepath.Join(t.TempDir(), "keys")
		sj := newJob(appendKey(out, `; [ "$LEASECRON_ATTEMPT" -ge 3 ]`))
		sj.Spec.Retries = &spec.Retries{Limit: ptr(int32(5)), Backoff: &spec.Backoff{Initial: dur(time.Millisecond), Max: dur(4 * time.Millisecond)}}
		e := newEngine(t, dialect, sj, spec.Env{})
		if got, err := e.runAt(t, slot); err != nil || got != jobs.Succeeded {
			t.Fatalf("RunSlot = %v, %v; want succeeded (log:\n%s)", got, err, e.log)
		}
		want := []string{slotKey + " 1", slotKey + " 2", slotKey + " 3"}
		if got := fileLines(t, out); !slices.Equal(got, want) {
			t.Fatalf("the file holds %q, want %q", got, want)
		}
		if row := onlyRow(t, e.db); row.Status != jobs.StatusSucceeded || row.Attempts != 3 {
			t.Fatalf("ledger row = %s after %d attempts, want succeeded after 3", row.Status, row.Attempts)
		}
	})
}

// An attempt that outlives spec.timeout is stopped and recorded failed as
// timed out.
func TestEngineTimeout(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		sj := newJob(&spec.Command{Args: []string{"sleep", "1000"}})
		sj.Spec.Timeout = dur(300 * time.Millisecond)
		e := newEngine(t, dialect, sj, spec.Env{})
		if got, err := e.runAt(t, slot); err != nil || got != jobs.Failed {
			t.Fatalf("RunSlot = %v, %v; want failed", got, err)
		}
		want := "command timed out after 300ms (spec.timeout) and was stopped with SIGTERM: it ended by signal: terminated"
		if row := onlyRow(t, e.db); row.Status != jobs.StatusFailed || row.Error != want {
			t.Fatalf("ledger row = %s %q, want failed with %q", row.Status, row.Error, want)
		}
	})
}

// When leadership is lost while a command runs, the leader's Lead returns
// only after the program's whole process group is dead, and the slot is
// not recorded succeeded.
func TestEngineLeadershipLostKillsTheCommand(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		sj := newJob(&spec.Command{
			Args:        []string{"sh", "-c", `trap "" TERM; sleep 1000 & echo "grandchild $!"; wait`},
			GracePeriod: dur(time.Hour),
		})
		sj.Spec.Schedule = "@every 1s"
		e := newEngine(t, dialect, sj, spec.Env{})
		ctx, lose := context.WithCancel(context.Background())
		defer lose()
		led := make(chan error, 1)
		go func() { led <- e.sched.Lead(ctx, nil, e.fence) }()
		grandchild := pidIn(t, e.log.waitFor(t, "grandchild"))
		lose()
		select {
		case err := <-led:
			if err != nil {
				t.Fatalf("Lead = %v, want nil after leadership was lost", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Lead did not return within 30s of losing leadership")
		}
		waitGone(t, grandchild)
		// The attempt's failure is recorded under the fence, which no new
		// term has replaced.
		rs := rows(t, e.db)
		want := "command killed with SIGKILL: its attempt was cancelled (leadership lost, or the controller's shutdown grace period is over): grandchild "
		if len(rs) != 1 || rs[0].Status != jobs.StatusFailed || !strings.HasPrefix(rs[0].Error, want) {
			t.Fatalf("ledger rows = %+v, want one, failed with %q", rs, want)
		}
	})
}
