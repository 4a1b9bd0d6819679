package commandjob

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

const (
	// maxLine is the longest line logged as one: a longer one is logged in
	// pieces of this size.
	maxLine = 64 << 10
	// tailMax is how much of the output's end a failure shows at most.
	tailMax = 1024
	// tailKeep is how much of the output's end is kept, of which the
	// failure shows up to tailMax.
	tailKeep = 2 * tailMax
	// messageMax keeps a failure's text within what the ledger stores of
	// it: the output's tail is shortened so that the whole text fits.
	messageMax = jobs.MaxErrorLen
	// drainWait is how long output is read after the program exited and
	// its group was killed: only a process that left the group can still
	// hold it open.
	drainWait = 2 * time.Second
	// redactedMark replaces a secret in the output.
	redactedMark = "[redacted]"
	// lineJoin joins the output's lines in a failure's text, which is one
	// line.
	lineJoin = " | "
)

// how the program was stopped, if it was.
type stopKind int

const (
	notStopped stopKind = iota
	timedOut            // the attempt's time was up
	cancelled           // leadership lost or shutdown
)

// Run implements jobs.Job: it runs the program once for the slot and waits
// for it to exit and for its output to be read. It fails unless the
// program exits with status 0. When ctx's deadline passes (the attempt's
// timeout) the program's group gets SIGTERM, and SIGKILL after the grace
// period; when ctx is cancelled (leadership lost, shutdown) it gets SIGKILL
// at once. The error's text holds no secret.
func (w *Job) Run(ctx context.Context, slot jobs.Slot) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("command not started: %w", err)
	}
	env, secrets, err := w.environ(slot)
	if err != nil {
		return err
	}
	cmd := exec.Command(w.args[0], w.args[1:]...)
	if cmd.Err != nil {
		return fmt.Errorf("command %s: %w", w.args[0], unwrapExec(cmd.Err))
	}
	cmd.Env = env
	cmd.Dir = w.dir
	setGroup(cmd)

	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("command %s: output pipe: %w", w.args[0], err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		_ = outR.Close()
		_ = outW.Close()
		return fmt.Errorf("command %s: output pipe: %w", w.args[0], err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	start := time.Now()
	err = cmd.Start()
	// The child has its own copies of the write ends (or none, if it did
	// not start): the read ends see EOF once every process holding them
	// has exited.
	_ = outW.Close()
	_ = errW.Close()
	if err != nil {
		_ = outR.Close()
		_ = errR.Close()
		return fmt.Errorf("start command %s: %w", w.args[0], unwrapExec(err))
	}

	log := w.log.With("job", w.job, "slot", slot.Time.UTC().Format(time.RFC3339Nano))
	log.Debug("command started", "pid", cmd.Process.Pid, "attempt", slot.Attempt)
	out := &output{ctx: ctx, log: log, secrets: secrets}
	var reading sync.WaitGroup
	reading.Go(func() { out.read(outR, "stdout") })
	reading.Go(func() { out.read(errR, "stderr") })

	// Wait for the program to exit, stopping it when ctx ends. On Linux
	// the exit is observed without reaping the program, so that its
	// process group's id stays its own until the group has been signalled
	// for the last time.
	exited := make(chan struct{})
	var (
		reaped  bool
		waitErr error
	)
	go func() {
		defer close(exited)
		reaped, waitErr = waitExit(cmd)
	}()
	var (
		stop       = notStopped
		stoppedAt  time.Time
		killedLate bool // SIGKILL after the grace period
		grace      *time.Timer
		graceUp    <-chan time.Time
		done       = ctx.Done()
	)
	send := func(what string, f func(*exec.Cmd) error) {
		if err := f(cmd); err != nil {
			log.Warn("could not signal the command's process group", "signal", what, "pid", cmd.Process.Pid, "err", err)
		}
	}
wait:
	for {
		select {
		case <-exited:
			break wait
		case <-done:
			done = nil
			stoppedAt = time.Now()
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				stop = cancelled
				send("SIGKILL", kill)
				continue
			}
			stop = timedOut
			if !canTerminate {
				send("SIGKILL", kill)
				continue
			}
			send("SIGTERM", terminate)
			grace = time.NewTimer(w.grace)
			graceUp = grace.C
		case <-graceUp:
			graceUp = nil
			killedLate = true
			send("SIGKILL", kill)
		}
	}
	if grace != nil {
		grace.Stop()
	}
	// Whatever the program left running in its group goes with it.
	killLeftovers(cmd)
	if !out.drain(&reading, outR, errR) {
		log.Warn("stopped reading the command's output: a process it started outside its process group still holds it open",
			"pid", cmd.Process.Pid)
	}
	if !reaped {
		waitErr = cmd.Wait()
	}
	return w.result(ctx, cmd, out, waitErr, stop, stoppedAt.Sub(start), killedLate)
}

// result is the outcome of a run that has ended.
func (w *Job) result(ctx context.Context, cmd *exec.Cmd, out *output, waitErr error, stop stopKind, ran time.Duration, killedLate bool) error {
	state := cmd.ProcessState
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		return fmt.Errorf("command %s: wait: %w", w.args[0], waitErr)
	}
	var ended string // how the program ended, if not with status 0
	switch {
	case state == nil:
		ended = "ended"
	case state.ExitCode() > 0:
		ended = "exited with status " + strconv.Itoa(state.ExitCode())
	case state.ExitCode() < 0:
		ended = "ended by " + state.String() // "signal: killed"
	}
	var (
		msg   string
		cause error
	)
	switch stop {
	case timedOut:
		limit := w.timeout
		if limit <= 0 {
			limit = roundDuration(ran)
		}
		cause = context.DeadlineExceeded
		msg = fmt.Sprintf("command timed out after %s (spec.timeout)", limit)
		switch {
		case killedLate:
			msg += fmt.Sprintf(" and was killed with SIGKILL: it had not exited %s (spec.command.gracePeriod) after SIGTERM", w.grace)
		case !canTerminate:
			msg += " and was killed"
		case ended != "":
			msg += " and was stopped with SIGTERM: it " + ended
		default:
			msg += " and was stopped with SIGTERM: it exited with status 0"
		}
	case cancelled:
		cause = context.Cause(ctx)
		msg = "command killed with SIGKILL: its attempt was cancelled (leadership lost, or the controller's shutdown grace period is over)"
		if !canTerminate {
			msg = "command killed: its attempt was cancelled (leadership lost, or the controller's shutdown grace period is over)"
		}
	default:
		if ended == "" {
			return nil
		}
		msg = "command " + ended
	}
	if tail := out.tail(messageMax - len(msg) - len(": ")); tail != "" {
		msg += ": " + tail
	}
	return &runError{msg: msg, err: cause}
}

// runError is a failed run. Its text is redacted; it wraps
// context.DeadlineExceeded or ctx's cause when the run was stopped.
type runError struct {
	msg string
	err error
}

func (e *runError) Error() string { return e.msg }
func (e *runError) Unwrap() error { return e.err }

// environ returns the program's environment for slot and the values in it
// that are secrets.
func (w *Job) environ(slot jobs.Slot) (env, secrets []string, err error) {
	set := func(name string) bool {
		return slices.ContainsFunc(w.env, func(v envVar) bool { return v.name == name })
	}
	env = make([]string, 0, 2+len(spec.SlotEnvNames())+len(w.env))
	for _, name := range []string{"PATH", "HOME"} {
		if v, ok := w.lookupEnv(name); ok && !set(name) {
			env = append(env, name+"="+v)
		}
	}
	for _, v := range spec.SlotEnv(slot) {
		env = append(env, v.Name+"="+v.Value)
	}
	var vals []string
	for _, v := range w.env {
		val := v.value
		switch {
		case v.file != "":
			if val, err = readFile(v.file); err != nil {
				return nil, nil, fmt.Errorf("%s (%s): %w", v.field, v.name, err)
			}
		case v.env != "":
			var ok bool
			if val, ok = w.lookupEnv(v.env); !ok {
				return nil, nil, fmt.Errorf("%s (%s): environment variable %s is not set in the controller's environment", v.field, v.name, v.env)
			}
			if strings.IndexByte(val, 0) >= 0 {
				return nil, nil, fmt.Errorf("%s (%s): environment variable %s holds a NUL byte, which no environment value can", v.field, v.name, v.env)
			}
		}
		if v.secret() {
			vals = append(vals, val)
		}
		env = append(env, v.name+"="+val)
	}
	return env, secretsOf(vals), nil
}

// secretsOf returns what redaction looks for: each secret value, and each
// line of a value of several lines (the output is redacted line by line);
// without empty and repeated ones, longest first.
func secretsOf(vals []string) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, v := range vals {
		add(v)
		if strings.ContainsAny(v, "\r\n") {
			for l := range strings.Lines(v) {
				add(strings.TrimRight(l, "\r\n"))
			}
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// redact replaces every occurrence of a secret in s with redactedMark;
// occurrences that overlap are replaced as one.
func redact(s string, secrets []string) string {
	type span struct{ from, to int }
	var spans []span
	for _, v := range secrets {
		for i := 0; i <= len(s)-len(v); {
			j := strings.Index(s[i:], v)
			if j < 0 {
				break
			}
			spans = append(spans, span{i + j, i + j + len(v)})
			i += j + 1
		}
	}
	if len(spans) == 0 {
		return s
	}
	slices.SortFunc(spans, func(a, b span) int { return a.from - b.from })
	var b strings.Builder
	pos := 0
	for i := 0; i < len(spans); {
		from, to := spans[i].from, spans[i].to
		for i++; i < len(spans) && spans[i].from < to; i++ {
			to = max(to, spans[i].to)
		}
		b.WriteString(s[pos:from])
		b.WriteString(redactedMark)
		pos = to
	}
	b.WriteString(s[pos:])
	return b.String()
}

// output reads a program's output: it logs each line, redacted, and keeps
// the end of the combined output.
type output struct {
	ctx     context.Context
	log     *slog.Logger
	secrets []string

	mu  sync.Mutex
	end []byte // the last tailKeep bytes or so of the redacted lines, each ended by \n
}

// read logs r's lines as stream until r ends or is closed, and closes it.
func (o *output) read(r io.ReadCloser, stream string) {
	defer func() { _ = r.Close() }()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			o.line(stream, line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (o *output) line(stream string, b []byte) {
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	s = redact(s, o.secrets)
	o.log.LogAttrs(o.ctx, slog.LevelInfo, s, slog.String("stream", stream))
	o.mu.Lock()
	defer o.mu.Unlock()
	o.end = append(append(o.end, s...), '\n')
	if len(o.end) > 2*tailKeep {
		o.end = append(o.end[:0], o.end[len(o.end)-tailKeep:]...)
	}
}

// drain waits for the readers to reach the end of the output. If that
// takes longer than drainWait, it closes the pipes and waits once more as
// long; it reports whether the output ended by itself.
func (o *output) drain(reading *sync.WaitGroup, pipes ...io.Closer) bool {
	done := make(chan struct{})
	go func() {
		reading.Wait()
		close(done)
	}()
	t := time.NewTimer(drainWait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	}
	for _, p := range pipes {
		_ = p.Close() // ends a read under way (Unix; on Windows, perhaps)
	}
	t.Reset(drainWait)
	select {
	case <-done:
	case <-t.C: // give up on them: they hold nothing Run needs
	}
	return false
}

// tail returns the end of the output as one line of valid UTF-8 of at most
// min(budget, tailMax) bytes, its lines joined by lineJoin; "…" starts it
// where it was cut.
func (o *output) tail(budget int) string {
	budget = min(budget, tailMax)
	o.mu.Lock()
	s := string(o.end)
	o.mu.Unlock()
	s = strings.Join(strings.Split(strings.TrimRight(s, "\n"), "\n"), lineJoin)
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.TrimSpace(s)
	if len(s) <= budget {
		return s
	}
	const cutMark = "…"
	if budget <= len(cutMark) {
		return ""
	}
	cut := len(s) - (budget - len(cutMark))
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	return cutMark + s[cut:]
}

// roundDuration rounds d for a message.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
