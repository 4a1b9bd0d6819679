//go:build unix

package commandjob_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasecron/leasecron/pkg/commandjob"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

// helperEnv, in a program's environment, makes the test binary the test's
// helper program instead of running tests: its value names what it does.
const helperEnv = "COMMANDJOB_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	runTests(m)
}

// helper is the test's helper program. Each mode handles SIGTERM first,
// then says "ready <pid>", so a test acts once the program is ready.
//
//	term         exits with status 3 on SIGTERM, saying "got TERM"
//	ignore-term  says "got TERM, ignoring it" on SIGTERM and runs on
func helper(mode string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	switch mode {
	case "term":
		fmt.Println("ready", os.Getpid())
		<-sigs
		fmt.Println("got TERM")
		return 3
	case "ignore-term":
		fmt.Println("ready", os.Getpid())
		for range sigs {
			fmt.Println("got TERM, ignoring it")
		}
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

// helperArgs returns a command that runs the helper in mode.
func helperArgs(t *testing.T, mode string) *spec.Command {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &spec.Command{Args: []string{self}, Env: []spec.EnvVar{{Name: helperEnv, Value: mode}}}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func ptr[T any](v T) *T { return &v }

const jobName = "cmd"

// newJob returns a job named cmd at 00:30 in Berlin (the slot's date in the
// job's zone is a day after its UTC date) with c as its command field.
func newJob(c *spec.Command) *spec.ScheduledJob {
	return &spec.ScheduledJob{
		ObjectMeta: metav1.ObjectMeta{Name: jobName},
		Spec: spec.JobSpec{
			Schedule: "30 0 * * *",
			TimeZone: "Europe/Berlin",
			Retries:  &spec.Retries{Limit: ptr(int32(1))},
			Command:  c,
		},
	}
}

// The slot the tests run: 00:30 in Berlin on 2026-03-10.
var (
	slot     = time.Date(2026, 3, 9, 23, 30, 0, 0, time.UTC)
	prevSlot = time.Date(2026, 3, 8, 23, 30, 0, 0, time.UTC)
	slotDate = "2026-03-10"
	slotKey  = jobs.SlotKey(jobName, slot)
)

func catalog() *spec.Catalog { return spec.NewCatalog(commandjob.Kind{Allowed: true}) }

func definition(t *testing.T, sj *spec.ScheduledJob, env spec.Env) jobs.Definition {
	t.Helper()
	def, err := catalog().Definition(sj, env)
	if err != nil {
		t.Fatalf("building the job: %v", err)
	}
	return def
}

// work returns a valid job's work, to run without the engine.
func work(t *testing.T, c *spec.Command, env spec.Env) jobs.Job {
	t.Helper()
	w, ok := definition(t, newJob(c), env).Work.(jobs.Job)
	if !ok {
		t.Fatal("the command kind's work is not a jobs.Job")
	}
	return w
}

// slotOf is the context the engine gives the work for the test's slot.
func slotOf(attempt int) jobs.Slot {
	loc, _ := time.LoadLocation("Europe/Berlin")
	return jobs.Slot{Job: jobName, Time: slot, Prev: prevSlot, Date: model.DateOf(slot.In(loc)), Location: loc,
		Key: slotKey, Attempt: attempt, Term: 7}
}

func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// logSink is where a test's slog output goes, as JSON: one record a line.
// Tests wait on it for what a program says, rather than for a guessed
// time.
type logSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{} // closed, and replaced, at every record
}

func newLogSink() *logSink { return &logSink{more: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	close(s.more)
	s.more = make(chan struct{})
	return len(p), nil
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// record is one logged record.
type record map[string]any

func (r record) str(k string) string { s, _ := r[k].(string); return s }

func (s *logSink) records(t *testing.T) []record {
	t.Helper()
	var out []record
	for line := range strings.Lines(s.String()) {
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// lines returns the program's output lines logged for stream.
func (s *logSink) lines(t *testing.T, stream string) []string {
	t.Helper()
	var out []string
	for _, r := range s.records(t) {
		if r.str("stream") == stream {
			out = append(out, r.str("msg"))
		}
	}
	return out
}

// waitFor waits until the program has written a line (on either stream)
// that starts with prefix, and returns it.
func (s *logSink) waitFor(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		more := s.more
		s.mu.Unlock()
		for _, r := range s.records(t) {
			if r.str("stream") != "" && strings.HasPrefix(r.str("msg"), prefix) {
				return r.str("msg")
			}
		}
		select {
		case <-more:
		case <-deadline.C:
			t.Fatalf("the program did not say %q within 30s; log:\n%s", prefix, s)
		}
	}
}

// pidIn returns the pid at the end of a line such as "ready 1234".
func pidIn(t *testing.T, line string) int {
	t.Helper()
	f := strings.Fields(line)
	pid, err := strconv.Atoi(f[len(f)-1])
	if err != nil || pid <= 1 {
		t.Fatalf("no pid in %q", line)
	}
	return pid
}

// waitGone waits until process pid no longer exists: kill(pid, 0) says
// ESRCH, or it is a zombie (dead, waiting for its parent, or init, to reap
// it). It polls, with a deadline, because reaping by init can lag.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) || zombie(pid) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still exists 10s after Run returned (kill -0: %v)", pid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// zombie reports whether pid is a zombie, where /proc tells.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// expiring is an attempt's context whose time the test ends: after expire,
// Done is closed and Err is context.DeadlineExceeded, as when the engine's
// attempt timeout passes. It lets a test end the attempt once the program
// is ready, not at a guessed time.
type expiring struct {
	context.Context // no values
	done            chan struct{}
	once            sync.Once
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (c *expiring) Deadline() (time.Time, bool) { return time.Now().Add(time.Hour), true }
func (c *expiring) Done() <-chan struct{}       { return c.done }
func (c *expiring) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}
func (c *expiring) expire() { c.once.Do(func() { close(c.done) }) }

// runAsync runs w in a goroutine; the channel gets Run's error.
func runAsync(ctx context.Context, w jobs.Job, s jobs.Slot) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- w.Run(ctx, s) }()
	return ch
}

// result waits for Run's error, failing the test if Run takes longer than
// within.
func result(t *testing.T, ch <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(within):
		t.Fatalf("Run did not return within %s", within)
		return nil
	}
}
