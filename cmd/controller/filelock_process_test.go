package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
)

// TestLockFileRemovedWhileLeading: two real processes share a lock file;
// removing it while p1 leads lets p2 lock a new file at the path and lead.
// p1 must notice within a second or so, stop leading and exit 1 saying why,
// while p2 goes on leading. The schedule is yearly and catch-up is off, so
// no slot comes due and the fence in the database (which would stop p1 at
// its next claim) plays no part.
func TestLockFileRemovedWhileLeading(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, "leasecron.lock")
	f := newFleet(t)
	args := []string{"run", "--mode", "filelock", "--lock-file", lock,
		"--database-dsn", "sqlite://" + filepath.Join(dir, "leasecron.db"), "--schedule", "daily-stats=0 0 0 1 1 *", "--catch-up-limit", "0",
		"--timezone", "UTC", "--http-addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace-period", "5s"}
	p1 := f.Start("p1", args...)
	f.Await(60*time.Second, "p1 to lead", func(e testenv.Event) bool { return e.Proc == "p1" && e.Msg == "leading" })
	p2 := f.Start("p2", args...)
	f.Await(60*time.Second, "p2 to wait for the lock", func(e testenv.Event) bool {
		return e.Proc == "p2" && e.Msg == "waiting for the file lock"
	})

	// p2 leads moments after the removal, before p1 notices: note its
	// "leading" while waiting for p1's events.
	p2Leads := false
	note := func(e testenv.Event) {
		if e.Proc == "p2" && e.Msg == "leading" {
			p2Leads = true
		}
	}
	removed := time.Now()
	if err := os.Remove(lock); err != nil {
		t.Fatal(err)
	}
	lost := f.Await(30*time.Second, "p1 to give up leadership", func(e testenv.Event) bool {
		note(e)
		return e.Proc == "p1" && strings.HasPrefix(e.Msg, "lost the file lock")
	})
	t.Logf("p1 gave up leadership %s after the lock file was removed", lost.At.Sub(removed).Round(time.Millisecond))
	exiting := f.Await(30*time.Second, "p1 to exit", func(e testenv.Event) bool {
		note(e)
		return e.Proc == "p1" && e.Msg == "exiting: this process no longer leads"
	})
	if msg := fmt.Sprint(exiting.Attrs["err"]); !strings.Contains(msg, lock+" was removed or replaced while held") {
		t.Errorf("p1's exit error = %q, want it to name %s as removed or replaced", msg, lock)
	}
	select {
	case <-p1.Done:
	case <-time.After(30 * time.Second):
		t.Fatal("p1 did not exit after losing the lock file")
	}
	if c := p1.Cmd.ProcessState.ExitCode(); c != 1 {
		t.Errorf("p1 exited %d after its lock file was removed, want 1", c)
	}
	if !p2Leads {
		f.Await(30*time.Second, "p2 to lead", func(e testenv.Event) bool { return e.Proc == "p2" && e.Msg == "leading" })
	}
	select {
	case <-p2.Done:
		t.Fatalf("p2 exited (code %d), but its lock file is in place", p2.Cmd.ProcessState.ExitCode())
	default:
	}
}
