package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Event is one JSON log line of one process of a Fleet.
type Event struct {
	Proc  string
	Msg   string
	Attrs map[string]any
	At    time.Time
}

// Proc is one running process of a Fleet.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	// Done is closed when the process has exited and its log is read.
	Done chan struct{}
}

// Fleet runs copies of a binary that log JSON lines on stderr, merges their
// logs into one stream of Events, and kills what is left at cleanup (and,
// by the parent-death signal, if the test process dies).
type Fleet struct {
	t      testing.TB
	binary string
	// Env is added to every process's environment.
	Env    []string
	events chan Event
	mu     sync.Mutex
	logs   bytes.Buffer
	procs  map[string]*Proc
	// notJSON holds every line a process wrote that is not JSON.
	notJSON []string
}

// NewFleet returns a fleet of binary's processes.
func NewFleet(t testing.TB, binary string) *Fleet {
	f := &Fleet{t: t, binary: binary, events: make(chan Event, 100000), procs: map[string]*Proc{}}
	t.Cleanup(func() {
		for _, p := range f.procs {
			_ = p.Cmd.Process.Kill()
			<-p.Done
		}
		if t.Failed() {
			f.mu.Lock()
			t.Logf("process logs:\n%s", f.logs.String())
			f.mu.Unlock()
		}
	})
	return f
}

// Start starts a process named name (its LEASECRON_IDENTITY too) with args.
func (f *Fleet) Start(name string, args ...string) *Proc {
	f.t.Helper()
	cmd := exec.Command(f.binary, args...)
	cmd.Env = append(append(os.Environ(), f.Env...), "LEASECRON_IDENTITY="+name)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		f.t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	p := &Proc{Name: name, Cmd: cmd, Done: make(chan struct{})}
	f.procs[name] = p
	go func() {
		defer close(p.Done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Bytes()
			f.mu.Lock()
			fmt.Fprintf(&f.logs, "%s: %s\n", name, line)
			f.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(line, &m) != nil {
				f.mu.Lock()
				f.notJSON = append(f.notJSON, name+": "+string(line))
				f.mu.Unlock()
				continue
			}
			msg, _ := m["msg"].(string)
			f.events <- Event{Proc: name, Msg: msg, Attrs: m, At: time.Now()}
		}
		_ = cmd.Wait()
	}()
	return p
}

// Await returns the next event matching ok, failing after timeout.
func (f *Fleet) Await(timeout time.Duration, what string, ok func(Event) bool) Event {
	f.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-f.events:
			if ok(e) {
				return e
			}
		case <-deadline:
			f.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// NotJSON returns the lines the processes wrote that were not JSON.
func (f *Fleet) NotJSON() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.notJSON...)
}

// Logs returns everything the processes wrote, each line prefixed with its
// process's name.
func (f *Fleet) Logs() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.String()
}

// Procs returns the processes started so far, by name.
func (f *Fleet) Procs() map[string]*Proc {
	out := make(map[string]*Proc, len(f.procs))
	for n, p := range f.procs {
		out[n] = p
	}
	return out
}

// Terminate sends SIGTERM to every process but those named in killed (gone
// already), waits for all of them, and fails the test for each terminated
// one that did not exit 0.
func (f *Fleet) Terminate(killed ...string) {
	f.t.Helper()
	skip := map[string]bool{}
	for _, n := range killed {
		skip[n] = true
	}
	for n, p := range f.procs {
		if !skip[n] {
			_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for n, p := range f.procs {
		<-p.Done
		if code := p.Cmd.ProcessState.ExitCode(); !skip[n] && code != 0 {
			f.t.Errorf("%s exited %d after SIGTERM, want 0", n, code)
		}
	}
}
