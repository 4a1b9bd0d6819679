package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv/testdb"
	"github.com/leasecron/leasecron/pkg/jobs"
)

// runBinary runs the binary under test and returns its exit code, stdout
// and stderr.
func runBinary(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// TestScriptableOutput: what a script sees of the shipped binary. --version
// and version print the same bytes, naming the stamped version; version -o
// json adds the Go version and platform; verify exits 0 when all is well, 1
// with its document when it finds a slot that did not succeed, and 3 when it
// cannot check.
func TestScriptableOutput(t *testing.T) {
	_, long, _ := runBinary(t, "version")
	_, flag, _ := runBinary(t, "--version")
	if long != flag || !strings.HasPrefix(long, "leasecron test-") || strings.Count(long, "\n") != 1 {
		t.Fatalf("version printed %q, --version %q: want the same line naming the stamped test- version", long, flag)
	}
	code, out, stderr := runBinary(t, "version", "-o", "json")
	var v struct{ Version, Commit, GoVersion, Platform string }
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 {
		t.Fatalf("version -o json: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if want := "leasecron " + v.Version + " (commit " + v.Commit + ")\n"; long != want || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("version -o json = %+v; want what version prints (%q), %s and %s/%s", v, long, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}

	dsn := "sqlite://" + filepath.Join(t.TempDir(), "leasecron.db")
	flags := []string{"--database-dsn", dsn, "--timezone", "UTC", "--log-level", "error"}
	if code, _, stderr := runBinary(t, append([]string{"backfill", "daily-stats", "--from", "2026-01-01", "--to", "2026-01-03"}, flags...)...); code != 0 {
		t.Fatalf("backfill: exit %d: %s", code, stderr)
	}
	verify := append([]string{"verify", "--from", "2026-01-01", "--to", "2026-01-03", "-o", "json"}, flags...)
	type findings struct {
		Findings []struct{ Kind, Job, Slot string }
	}
	decode := func(out string) findings {
		t.Helper()
		var f findings
		if err := json.Unmarshal([]byte(out), &f); err != nil {
			t.Fatalf("verify -o json: %v\n%s", err, out)
		}
		return f
	}
	if code, out, stderr := runBinary(t, verify...); code != 0 || len(decode(out).Findings) != 0 {
		t.Fatalf("verify of a filled range: exit %d, want 0 and no findings\n%s%s", code, out, stderr)
	}
	res := testdb.Open(t, dsn).Where("job = ? AND slot > ?", "daily-stats", time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)).Delete(&jobs.JobRun{})
	if res.Error != nil || res.RowsAffected != 2 {
		t.Fatalf("delete two ledger rows: %v (%d rows)", res.Error, res.RowsAffected)
	}
	code, out, stderr = runBinary(t, verify...)
	if f := decode(out); code != 1 || len(f.Findings) != 2 || f.Findings[0].Slot != "2026-01-02T00:00:50Z" || f.Findings[1].Slot != "2026-01-03T00:00:50Z" || f.Findings[0].Kind != "slotNotSucceeded" {
		t.Fatalf("verify with two slots gone: exit %d, want 1 and the two slots as findings\n%s%s", code, out, stderr)
	}
	code, out, stderr = runBinary(t, "verify", "--database-dsn", "postgres://app:hunter2@127.0.0.1:1/app", "--database-connect-timeout", "200ms", "--log-level", "error", "-o", "json")
	if code != 3 || out != "" || strings.Contains(stderr, "hunter2") || !strings.Contains(stderr, "postgres://app:xxxxx@127.0.0.1:1/app is unreachable") {
		t.Fatalf("verify of an unreachable database: exit %d, want 3, nothing on stdout and the redacted DSN on stderr\n%s%s", code, out, stderr)
	}
}
