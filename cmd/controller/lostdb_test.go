package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/model"
)

// A leader that loses its database must not keep the lock forever while a
// process that can reach the database waits: after --database-lost-timeout
// it lets go (in filelock mode: releases the lock and waits), and the other
// process leads and runs slots.
//
// Every line of both processes is JSON: the MySQL driver's own complaints
// about the lost connections go through the controller's logger.
func TestLeaderWithoutDatabaseLetsGo(t *testing.T) {
	for _, d := range []string{"mysql", "postgres"} {
		t.Run(d, func(t *testing.T) { leaderWithoutDatabaseLetsGo(t, d) })
	}
}

func leaderWithoutDatabaseLetsGo(t *testing.T, dialect string) {
	const lost = 2 * time.Second
	direct := testenv.DSN(t, dialect)
	proxy, through := testenv.ProxyDSN(t, direct)
	lock := filepath.Join(t.TempDir(), "leasecron.lock")
	f := newFleet(t)
	args := func(dsn string) []string {
		return []string{"run", "--mode", "filelock", "--lock-file", lock,
			"--database-dsn", dsn, "--schedule", "daily-stats=* * * * * *", "--timezone", "UTC",
			"--http-addr", "127.0.0.1:0", "--log-format", "json", "--database-lost-timeout", lost.String()}
	}
	isLeading := func(e testenv.Event) bool { return e.Msg == "leading" }
	f.Start("cut", args(through)...)
	if e := f.Await(60*time.Second, "the first leader", isLeading); e.Proc != "cut" {
		t.Fatalf("%s leads, want cut", e.Proc)
	}
	f.Start("direct", args(direct)...)
	f.Await(30*time.Second, "a slot of the first leader", func(e testenv.Event) bool { return e.Msg == "slot succeeded" && e.Proc == "cut" })

	proxy.Close() // the first leader's database is gone; the other's is not
	cutAt := time.Now()
	f.Await(lost+10*time.Second, "the cut-off leader letting go", func(e testenv.Event) bool {
		return e.Proc == "cut" && e.Msg == "let go of leadership: this process cannot reach the database"
	})
	e := f.Await(10*time.Second, "a new leader", isLeading)
	if e.Proc != "direct" {
		t.Fatalf("%s leads after the cut, want direct", e.Proc)
	}
	took := e.At.Sub(cutAt)
	t.Logf("the process with a database leads %s after the leader lost its own (--database-lost-timeout %s)", took.Round(time.Millisecond), lost)
	f.Await(30*time.Second, "a slot of the new leader", func(e testenv.Event) bool { return e.Msg == "slot succeeded" && e.Proc == "direct" })
	for _, p := range f.Procs() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		<-p.Done
	}
	if len(f.NotJSON()) > 0 {
		t.Errorf("lines that are not JSON:\n%s", strings.Join(f.NotJSON(), "\n"))
	}
}

// A ledger that cannot be read when leadership starts ends the process with
// exit 1 and a line that says why, not with a silent exit 0.
func TestUnreadableLedgerExits1(t *testing.T) {
	dir := t.TempDir()
	dsn := "sqlite://" + filepath.Join(dir, "leasecron.db")
	if out, err := exec.Command(binary, "migrate", "--database-dsn", dsn, "--log-level", "error").CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	parsed, err := model.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.Open(context.Background(), parsed, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Exec("INSERT INTO job_runs (job, slot, status, holder, fence, attempts) VALUES ('daily-stats', 'not a time', 'succeeded', 'x', 1, 1)").Error
	_ = model.Close(db)
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	p := f.Start("p1", "run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"),
		"--database-dsn", dsn, "--http-addr", "127.0.0.1:0", "--log-format", "json")
	e := f.Await(30*time.Second, "the exit line", func(e testenv.Event) bool { return e.Msg == "exiting" })
	if why := fmt.Sprint(e.Attrs["err"]); !strings.Contains(why, "daily-stats cannot start") {
		t.Errorf("exit line says %q, want why daily-stats cannot start", why)
	}
	<-p.Done
	if code := p.Cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
}
