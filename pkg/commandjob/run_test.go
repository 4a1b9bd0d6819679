//go:build unix

package commandjob_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

// envFile reads a file of NAME=value lines, as env(1) writes them.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		if !ok {
			t.Fatalf("env line %q has no =", line)
		}
		m[k] = v
	}
	return m
}

// The program gets PATH and HOME from the controller's environment, the
// slot context and the spec's variables, and nothing else of the
// controller's environment; variables from a file and from the
// controller's environment are read again at every attempt.
func TestEnvironment(t *testing.T) {
	t.Setenv("HOME", "/home/commandjob-test")
	t.Setenv("COMMANDJOB_TEST_LEAK", "must-not-pass")
	t.Setenv("COMMANDJOB_TEST_TOKEN", "env-token-1")
	secret := writeFile(t, "secret", "file-token-1\n", 0o600)
	out := filepath.Join(t.TempDir(), "env")
	w := work(t, &spec.Command{
		Args: []string{"sh", "-c", `env > "$OUT"`},
		Env: []spec.EnvVar{
			{Name: "OUT", Value: out},
			{Name: "PLAIN", Value: "a plain value"},
			{Name: "FROM_FILE", File: secret},
			{Name: "FROM_ENV", Env: "COMMANDJOB_TEST_TOKEN"},
			{Name: "EMPTY"},
		},
	}, spec.Env{Log: newLogSink().logger()}) // the controller's own environment
	base := map[string]string{
		"PATH":                os.Getenv("PATH"),
		"HOME":                "/home/commandjob-test",
		"LEASECRON_SLOT":      "2026-03-09T23:30:00Z",
		"LEASECRON_SLOT_DATE": slotDate,
		"LEASECRON_PREV_SLOT": "2026-03-08T23:30:00Z",
		"LEASECRON_JOB":       jobName,
		"LEASECRON_KEY":       "cmd@2026-03-09T23:30:00Z",
		"LEASECRON_TERM":      "7",
		"OUT":                 out,
		"PLAIN":               "a plain value",
		"EMPTY":               "",
	}
	check := func(s jobs.Slot, want map[string]string) {
		t.Helper()
		if err := w.Run(context.Background(), s); err != nil {
			t.Fatalf("attempt %d: %v", s.Attempt, err)
		}
		got := envFile(t, out)
		delete(got, "PWD") // sh's own
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("attempt %d: %s = %q (set: %v), want %q", s.Attempt, k, g, ok, v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("attempt %d: the program got %s=%q, which it should not", s.Attempt, k, got[k])
			}
		}
	}
	want := map[string]string{"LEASECRON_ATTEMPT": "1", "FROM_FILE": "file-token-1", "FROM_ENV": "env-token-1"}
	for k, v := range base {
		want[k] = v
	}
	check(slotOf(1), want)

	// The Secret is rotated: the next attempt reads the new values.
	if err := os.WriteFile(secret, []byte("file-token-2\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COMMANDJOB_TEST_TOKEN", "env-token-2")
	want["LEASECRON_ATTEMPT"], want["FROM_FILE"], want["FROM_ENV"] = "2", "file-token-2", "env-token-2"
	check(slotOf(2), want)

	// A schedule with no slot before this one: the previous slot is empty.
	s := slotOf(3)
	s.Prev = time.Time{}
	want["LEASECRON_ATTEMPT"], want["LEASECRON_PREV_SLOT"] = "3", ""
	check(s, want)
}

// A spec's PATH and HOME replace the controller's; without them in the
// controller's environment the program has none.
func TestPathAndHome(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	run := func(env spec.Env, vars []spec.EnvVar) map[string]string {
		t.Helper()
		c := &spec.Command{Args: []string{"/bin/sh", "-c", `/usr/bin/env > "$OUT"`}, Env: append(vars, spec.EnvVar{Name: "OUT", Value: out})}
		env.Log = newLogSink().logger()
		if err := work(t, c, env).Run(context.Background(), slotOf(1)); err != nil {
			t.Fatal(err)
		}
		return envFile(t, out)
	}
	got := run(spec.Env{LookupEnv: lookup(map[string]string{"PATH": "/controller/bin", "HOME": "/controller"})},
		[]spec.EnvVar{{Name: "PATH", Value: "/usr/bin:/bin"}, {Name: "HOME", Value: "/job"}})
	if got["PATH"] != "/usr/bin:/bin" || got["HOME"] != "/job" {
		t.Fatalf("PATH, HOME = %q, %q; want the spec's /usr/bin:/bin and /job", got["PATH"], got["HOME"])
	}
	got = run(spec.Env{LookupEnv: lookup(nil)}, nil)
	if _, ok := got["HOME"]; ok {
		t.Fatalf("HOME = %q, want none: the controller has none", got["HOME"])
	}
	if p, ok := got["PATH"]; ok && p == os.Getenv("PATH") {
		t.Fatalf("PATH = %q, want not the test's: the controller (as LookupEnv says) has none", p)
	}
}

// The program runs in workingDir, where a relative program is found.
func TestWorkingDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "where.sh"), []byte("#!/bin/sh\necho \"in $(pwd)\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	log := newLogSink()
	w := work(t, &spec.Command{Args: []string{"./where.sh"}, WorkingDir: dir}, spec.Env{Log: log.logger()})
	if err := w.Run(context.Background(), slotOf(1)); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(dir)
	if got := log.lines(t, "stdout"); len(got) != 1 || (got[0] != "in "+dir && got[0] != "in "+real) {
		t.Fatalf("stdout = %q, want [\"in %s\"]", got, dir)
	}
}

// Output is logged line by line, with job, slot and stream, at Info; a
// non-zero status is a failure that shows the status and the output's end.
func TestExitStatusAndOutput(t *testing.T) {
	log := newLogSink()
	w := work(t, &spec.Command{Args: []string{"sh", "-c", `echo first; echo "to stderr" >&2; echo; printf 'last, no newline'; exit 7`}},
		spec.Env{Log: log.logger()})
	err := w.Run(context.Background(), slotOf(1))
	if err == nil {
		t.Fatal("Run succeeded, want a failure")
	}
	const prefix = "command exited with status 7: "
	// The streams are read side by side: stderr's line may come anywhere
	// among stdout's.
	tail, ok := strings.CutPrefix(err.Error(), prefix)
	lines := strings.Split(tail, " | ")
	i := slices.Index(lines, "to stderr")
	if !ok || i < 0 || strings.Join(slices.Delete(lines, i, i+1), " | ") != "first |  | last, no newline" {
		t.Fatalf("error = %q, want %q then the output, its lines joined by \" | \"", err, prefix)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %q wraps a context error", err)
	}
	if got := log.lines(t, "stdout"); !slices.Equal(got, []string{"first", "", "last, no newline"}) {
		t.Fatalf("stdout lines = %q", got)
	}
	if got := log.lines(t, "stderr"); !slices.Equal(got, []string{"to stderr"}) {
		t.Fatalf("stderr lines = %q", got)
	}
	for _, r := range log.records(t) {
		if r.str("stream") == "" {
			continue
		}
		if r.str("level") != "INFO" || r.str("job") != jobName || r.str("slot") != "2026-03-09T23:30:00Z" {
			t.Fatalf("output record %v, want level INFO, job %s, slot 2026-03-09T23:30:00Z", r, jobName)
		}
	}

	// Status 0 is success.
	if err := work(t, &spec.Command{Args: []string{"sh", "-c", "echo fine"}}, spec.Env{Log: log.logger()}).Run(context.Background(), slotOf(1)); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
	// Death by a signal the program sent itself is a failure too.
	err = work(t, &spec.Command{Args: []string{"sh", "-c", "echo dying; kill -SEGV $$"}}, spec.Env{Log: log.logger()}).Run(context.Background(), slotOf(1))
	if err == nil || !strings.HasPrefix(err.Error(), "command ended by signal: segmentation fault: dying") {
		t.Fatalf("killed by SIGSEGV: error = %v", err)
	}
}

// Of a long output every line is logged before Run returns, and the
// failure keeps its end: at most jobs.MaxErrorLen bytes in all, valid
// UTF-8, cut between characters wherever the cut falls.
func TestLongOutput(t *testing.T) {
	const n = 3000
	for _, pad := range []string{"", "x", "xx"} {
		log := newLogSink()
		script := fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo "%sline $i €ü"; i=$((i+1)); done; exit 1`, n, pad)
		err := work(t, &spec.Command{Args: []string{"sh", "-c", script}}, spec.Env{Log: log.logger()}).Run(context.Background(), slotOf(1))
		if err == nil {
			t.Fatal("Run succeeded, want a failure")
		}
		msg := err.Error()
		if len(msg) > jobs.MaxErrorLen || !utf8.ValidString(msg) {
			t.Fatalf("pad %q: error is %d bytes (valid UTF-8: %v), want at most %d of valid UTF-8", pad, len(msg), utf8.ValidString(msg), jobs.MaxErrorLen)
		}
		if !strings.HasPrefix(msg, "command exited with status 1: …") || !strings.HasSuffix(msg, fmt.Sprintf("%sline %d €ü", pad, n)) {
			t.Fatalf("pad %q: error = %.80q … %q, want the status, then the end of the output", pad, msg, msg[max(0, len(msg)-40):])
		}
		if len(msg) < jobs.MaxErrorLen-100 {
			t.Fatalf("pad %q: error keeps %d bytes, want most of %d", pad, len(msg), jobs.MaxErrorLen)
		}
		lines := log.lines(t, "stdout")
		if len(lines) != n || lines[n-1] != fmt.Sprintf("%sline %d €ü", pad, n) {
			t.Fatalf("pad %q: %d stdout lines logged, want %d, the last one last", pad, len(lines), n)
		}
	}
}

// A secret (a variable from a file or from the controller's environment)
// that the program writes is [redacted] in the log and in the failure; a
// secret of several lines is redacted line by line; a plain value is not a
// secret.
func TestSecretsAreRedacted(t *testing.T) {
	const (
		fileSecret = "file-secret-7f3a"
		envSecret  = "env-secret-0d5e"
		pemLine1   = "pem-line-one-abc"
		pemLine2   = "pem-line-two-def"
	)
	secret := writeFile(t, "secret", fileSecret+"\n", 0o600)
	pem := writeFile(t, "pem", pemLine1+"\n"+pemLine2+"\n", 0o600)
	log := newLogSink()
	w := work(t, &spec.Command{
		Args: []string{"sh", "-c", `echo "out $FILE_SECRET."; echo "err $ENV_SECRET" >&2; printf '%s\n' "$PEM"; echo "plain $PLAIN"; exit 2`},
		Env: []spec.EnvVar{
			{Name: "FILE_SECRET", File: secret},
			{Name: "ENV_SECRET", Env: "COMMANDJOB_SECRET"},
			{Name: "PEM", File: pem},
			{Name: "PLAIN", Value: "plain-visible"},
		},
	}, spec.Env{Log: log.logger(), LookupEnv: lookup(map[string]string{"PATH": os.Getenv("PATH"), "COMMANDJOB_SECRET": envSecret})})
	err := w.Run(context.Background(), slotOf(1))
	if err == nil {
		t.Fatal("Run succeeded, want a failure")
	}
	want := "command exited with status 2: "
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "out [redacted].") ||
		!strings.Contains(err.Error(), "err [redacted]") || !strings.Contains(err.Error(), "plain plain-visible") {
		t.Fatalf("error = %q, want the output with the secrets [redacted] and the plain value shown", err)
	}
	if got := log.lines(t, "stdout"); !slices.Equal(got, []string{"out [redacted].", "[redacted]", "[redacted]", "plain plain-visible"}) {
		t.Fatalf("stdout lines = %q", got)
	}
	if got := log.lines(t, "stderr"); !slices.Equal(got, []string{"err [redacted]"}) {
		t.Fatalf("stderr lines = %q", got)
	}
	for _, s := range []string{fileSecret, envSecret, pemLine1, pemLine2} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error shows %q: %q", s, err)
		}
		if strings.Contains(log.String(), s) {
			t.Errorf("log shows %q:\n%s", s, log)
		}
	}
}

// When the attempt's time is up the program gets SIGTERM, and a program
// that exits on it ends the run at once (well within its grace period);
// the failure says it timed out.
func TestTimeoutSendsTERM(t *testing.T) {
	log := newLogSink()
	c := helperArgs(t, "term")
	c.GracePeriod = dur(time.Hour)
	w := work(t, c, spec.Env{Log: log.logger()})
	ctx := newExpiring()
	ch := runAsync(ctx, w, slotOf(1))
	pid := pidIn(t, log.waitFor(t, "ready"))
	ctx.expire()
	err := result(t, ch, 30*time.Second)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want a failure that wraps context.DeadlineExceeded", err)
	}
	want := "command timed out after 10m0s (spec.timeout) and was stopped with SIGTERM: it exited with status 3: ready "
	if !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), " | got TERM") {
		t.Fatalf("error = %q, want it to start %q and end with the program's last line", err, want)
	}
	if got := log.lines(t, "stdout"); len(got) != 2 || got[1] != "got TERM" {
		t.Fatalf("stdout lines = %q, want ready, then got TERM", got)
	}
	waitGone(t, pid)
}

// A program that ignores SIGTERM gets SIGKILL once the grace period after
// it is over.
func TestIgnoredTERMIsKilledAfterGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	log := newLogSink()
	c := helperArgs(t, "ignore-term")
	c.GracePeriod = dur(grace)
	w := work(t, c, spec.Env{Log: log.logger()})
	ctx := newExpiring()
	ch := runAsync(ctx, w, slotOf(1))
	pid := pidIn(t, log.waitFor(t, "ready"))
	ctx.expire()
	expired := time.Now()
	log.waitFor(t, "got TERM, ignoring it")
	err := result(t, ch, 30*time.Second)
	if took := time.Since(expired); took < grace {
		t.Fatalf("Run returned %s after the timeout, before the grace period of %s was over", took, grace)
	}
	want := "command timed out after 10m0s (spec.timeout) and was killed with SIGKILL: it had not exited 300ms (spec.command.gracePeriod) after SIGTERM: "
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), want) ||
		!strings.HasSuffix(err.Error(), "got TERM, ignoring it") {
		t.Fatalf("error = %v, want it to start %q and end with the program's last line", err, want)
	}
	waitGone(t, pid)
}

// When the attempt is cancelled (leadership lost, shutdown) the whole
// process group gets SIGKILL at once: the program and what it started,
// although they ignore SIGTERM and the grace period is an hour.
func TestCancelKillsTheGroupAtOnce(t *testing.T) {
	log := newLogSink()
	w := work(t, &spec.Command{
		Args:        []string{"sh", "-c", `trap "" TERM; sleep 1000 & echo "grandchild $!"; echo "shell $$"; wait`},
		GracePeriod: dur(time.Hour),
	}, spec.Env{Log: log.logger()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := runAsync(ctx, w, slotOf(1))
	grandchild := pidIn(t, log.waitFor(t, "grandchild"))
	shell := pidIn(t, log.waitFor(t, "shell"))
	cancel()
	err := result(t, ch, 30*time.Second)
	want := "command killed with SIGKILL: its attempt was cancelled (leadership lost, or the controller's shutdown grace period is over): "
	if err == nil || !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Run = %v, want it to start %q and wrap context.Canceled", err, want)
	}
	waitGone(t, shell)
	waitGone(t, grandchild)
}

// What a program leaves running in its group when it exits is killed, and
// does not hold Run up by holding its output open.
func TestLeftoversAreKilledOnExit(t *testing.T) {
	log := newLogSink()
	w := work(t, &spec.Command{Args: []string{"sh", "-c", `sleep 1000 & echo "grandchild $!"`}}, spec.Env{Log: log.logger()})
	start := time.Now()
	if err := result(t, runAsync(context.Background(), w, slotOf(1)), 30*time.Second); err != nil {
		t.Fatalf("Run = %v, want success", err)
	}
	grandchild := pidIn(t, log.waitFor(t, "grandchild"))
	waitGone(t, grandchild)
	if strings.Contains(log.String(), "stopped reading") {
		t.Fatalf("Run waited %s for the output to end, want the leftover killed:\n%s", time.Since(start), log)
	}
}

// A process that leaves the program's group is not waited for: Run stops
// reading its output shortly after the program exits, and says so.
func TestEscapedProcessDoesNotHoldRunUp(t *testing.T) {
	log := newLogSink()
	// setsid(1) puts the inner shell in a session, and group, of its own;
	// the program exits once it has said so through the fifo.
	fifo := filepath.Join(t.TempDir(), "escaped")
	w := work(t, &spec.Command{
		Args: []string{"sh", "-c", `mkfifo "$FIFO"; setsid sh -c 'echo "escaped $$" > "$FIFO"; exec sleep 1000' & read line < "$FIFO"; echo "$line"`},
		Env:  []spec.EnvVar{{Name: "FIFO", Value: fifo}},
	}, spec.Env{Log: log.logger()})
	if err := result(t, runAsync(context.Background(), w, slotOf(1)), 30*time.Second); err != nil {
		t.Fatalf("Run = %v, want success", err)
	}
	escaped := pidIn(t, log.waitFor(t, "escaped"))
	t.Cleanup(func() { _ = syscall.Kill(escaped, syscall.SIGKILL) })
	if !strings.Contains(log.String(), "stopped reading the command's output") {
		t.Fatalf("no warning that the output was left unread:\n%s", log)
	}
}

// An attempt fails before the program starts when its context has ended,
// when the program is gone, or when a variable's file is.
func TestFailsBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	script := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch \"$MARKER\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	secret := writeFile(t, "secret", "s3cret\n", 0o600)
	w := work(t, &spec.Command{Args: []string{script}, Env: []spec.EnvVar{{Name: "MARKER", Value: marker}, {Name: "TOKEN", File: secret}}},
		spec.Env{Log: newLogSink().logger()})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx, slotOf(1)); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with an ended context = %v, want context.Canceled", err)
	}
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	err := w.Run(context.Background(), slotOf(1))
	if err == nil || !strings.Contains(err.Error(), "spec.command.env[1] (TOKEN): cannot read "+secret) {
		t.Fatalf("Run without the variable's file = %v, want an error naming the field and the file", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program ran")
	}
	w = work(t, &spec.Command{Args: []string{script}, Env: []spec.EnvVar{{Name: "MARKER", Value: marker}}}, spec.Env{Log: newLogSink().logger()})
	if err := os.Remove(script); err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background(), slotOf(1)); err == nil || !strings.Contains(err.Error(), script) {
		t.Fatalf("Run without the program = %v, want an error naming it", err)
	}
}
