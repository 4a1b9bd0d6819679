// Package commandjob is the command job kind: for each slot it runs a
// program as a child process of the leader.
//
// # Promise
//
// At-least-once, with the same key on every attempt. The program is started
// after the slot is claimed in the ledger and its success is recorded after
// it exits with status 0, so a slot runs at least once: an attempt that
// fails (a non-zero status, a timeout) runs again, and so does one whose
// success could not be recorded because another leader took over meanwhile
// (the engine records completion only under a valid leadership term). Every
// attempt of a slot, on every leader, catch-up and backfill, has the same
//
//	LEASECRON_KEY=<job>@<slot RFC 3339 UTC>
//
// in its environment, so a program that keys its effect on it (an
// insert-if-absent on the key, an object named after it) sees each slot
// once. What breaks the promise: a program that ignores LEASECRON_KEY may
// do a slot's work twice (after a retry, after a timeout that ended it
// half-way, after a leader change while it ran); and a success that never
// reached the ledger (the leader lost its term, or died, between the exit
// and the record) runs again.
//
// # Environment
//
// The program runs without a shell (use ["sh", "-c", "..."] for one), with
// standard input from the null device, in spec.command.workingDir (default:
// the controller's), and with a minimal environment, in this order:
//
//	PATH, HOME           the controller's, where they are set; nothing
//	                     else of the controller's environment is passed on
//	LEASECRON_SLOT       the slot's time, RFC 3339 UTC, such as 2026-03-10T04:00:00Z
//	LEASECRON_SLOT_DATE  its calendar date in the job's zone, YYYY-MM-DD
//	LEASECRON_PREV_SLOT  the schedule's slot before it, RFC 3339 UTC ("" if none)
//	LEASECRON_JOB        the job's name
//	LEASECRON_KEY        the slot's key, the same on every attempt
//	LEASECRON_ATTEMPT    the attempt's number, from 1
//	LEASECRON_TERM       the leadership term (the fence); 0 for a manual run
//	spec.command.env     in spec order; these may replace PATH and HOME
//
// Never the current time: a caught-up or backfilled slot does the work of
// its own time. A variable from a file (a mounted Secret) or from the
// controller's environment is read at every attempt, so a rotated Secret is
// picked up, and its trailing newline is trimmed. A variable that sets none
// of value, file and env is set to the empty string.
//
// # Output and secrets
//
// The program's standard output and error are logged line by line at Info
// level, with the attributes job, slot and stream ("stdout" or "stderr"); a
// line longer than 64 KiB is logged in pieces. The last KiB or so of the
// combined output (the two streams are read side by side, so their lines
// interleave as they were read), joined by " | ", ends the text of a failure,
// which the engine logs and records in the ledger. Every value of a
// variable from a file or the controller's environment (a secret) that the
// program writes is replaced by [redacted], in the log and in the failure;
// a secret of several lines is also redacted line by line.
//
// # How it ends
//
// Exit status 0 is success; any other status, or death by a signal, is a
// failure that shows the status and the output's tail. The program runs in
// a process group of its own, and:
//
//   - when the attempt's time (spec.timeout) is up, the group gets SIGTERM,
//     and SIGKILL if the program has not exited gracePeriod (default 10s)
//     later; the failure says it timed out;
//   - when leadership is lost, or the controller's shutdown grace is over,
//     the group gets SIGKILL at once;
//   - when the program exits, whatever it left running in its group is
//     killed.
//
// Run returns only once the program has exited and its output has been
// read, so no process of the attempt's group outlives the attempt, and none
// outlives the leader's term. What escapes this: a process that leaves the
// group (setsid, setpgid, a daemon) is not killed, and its output is read
// for at most two seconds after the program exits; a controller that is
// itself killed (SIGKILL, out of memory) leaves the program running, and
// the next leader runs the slot again; and a leadership loss that comes
// while a timed-out program is in its grace period does not shorten it.
//
// # Privilege
//
// The program runs as the controller's own user. Its environment carries
// none of the controller's settings (only PATH and HOME pass), but it can
// read every file the controller can (its mounted Secrets, the database
// DSN's file, a service account token) and reach everything it can over
// the network. Whoever can define a job could then run any program as
// that user, so the kind is off unless the controller is started with
// --allow-command-jobs (Kind.Allowed): without it, a command job is
// refused when the jobs are loaded, before anything runs.
//
// # Windows and other systems without process groups
//
// Outside Unix there are no process groups and no SIGTERM: only the
// program itself is killed (at once, also when its time is up, so
// gracePeriod does not apply), a process it started may outlive it, and
// its output after the program exits is read for at most two seconds.
package commandjob

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/leasecron/leasecron/pkg/spec"
)

// KindName is the kind's name: its field in a job spec.
const KindName = "command"

// DefaultGracePeriod is how long a program whose time is up has between
// SIGTERM and SIGKILL, when its spec sets no gracePeriod.
const DefaultGracePeriod = 10 * time.Second

// offMessage is what a controller that does not allow command jobs says.
const offMessage = "command jobs are off in this controller: start it with --allow-command-jobs (it runs programs as the controller's user)"

// Kind is the command kind. It implements spec.Kind. The zero value refuses
// every command job: a controller allows them with Allowed, which its
// --allow-command-jobs flag sets.
type Kind struct {
	// Allowed turns the kind on.
	Allowed bool
}

// Name implements spec.Kind.
func (Kind) Name() string { return KindName }

// Build implements spec.Kind: it checks spec.command and returns a *Job.
// Unless k.Allowed, it refuses the job.
func (k Kind) Build(j spec.Job) (any, error) {
	if !k.Allowed {
		return nil, j.Errorf("spec.command", "%s", offMessage)
	}
	w, err := build(j)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Job is the command work: one run of the program per attempt. It
// implements jobs.Job.
type Job struct {
	job       string
	args      []string
	env       []envVar // in spec order
	dir       string
	grace     time.Duration
	timeout   time.Duration // the attempt's, for messages
	lookupEnv func(string) (string, bool)
	log       *slog.Logger
}

// envVar is one variable of spec.command.env: a value, or where to read it.
type envVar struct {
	field string // spec.command.env[i], for messages
	name  string
	value string
	file  string
	env   string
}

// secret reports whether the variable's value is read from a file or the
// controller's environment, and so is redacted.
func (v envVar) secret() bool { return v.file != "" || v.env != "" }

func build(j spec.Job) (*Job, error) {
	c := j.Spec.Command
	if c == nil {
		return nil, j.Errorf("spec.command", "missing: a command job needs at least args, such as [\"/usr/local/bin/rollup\"]")
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, j.Errorf(field, format, args...))
	}
	w := &Job{
		job: j.Name, args: slices.Clone(c.Args), dir: c.WorkingDir, grace: DefaultGracePeriod,
		timeout: j.Policy.Timeout, lookupEnv: j.Env.LookupEnv, log: j.Env.Log,
	}
	if w.lookupEnv == nil {
		w.lookupEnv = os.LookupEnv
	}
	if w.log == nil {
		w.log = slog.Default()
	}

	// workingDir, first: a relative program is found from it.
	dirOK := true
	if c.WorkingDir != "" {
		dirOK = false
		switch fi, err := os.Stat(c.WorkingDir); {
		case err != nil:
			bad("spec.command.workingDir", "cannot use %s: %v: create it, or fix the path", c.WorkingDir, spec.UnwrapPath(err))
		case !fi.IsDir():
			bad("spec.command.workingDir", "%s is not a directory: give a directory", c.WorkingDir)
		default:
			dirOK = true
		}
	}

	// args
	switch {
	case len(c.Args) == 0:
		bad("spec.command.args", "missing: give the program and its arguments, such as [\"/usr/local/bin/rollup\", \"--verbose\"] (no shell: use [\"sh\", \"-c\", \"...\"] for one)")
	case c.Args[0] == "":
		bad("spec.command.args[0]", "the program is empty: give its name on the controller's PATH or its path")
	case dirOK:
		if msg := checkProgram(c.Args[0], c.WorkingDir); msg != "" {
			bad("spec.command.args[0]", "%s", msg)
		}
	}
	for i, a := range c.Args {
		if strings.IndexByte(a, 0) >= 0 {
			bad(fmt.Sprintf("spec.command.args[%d]", i), "holds a NUL byte, which no program argument can")
		}
	}

	// env
	seen := map[string]string{} // name -> field
	for i, e := range c.Env {
		field := fmt.Sprintf("spec.command.env[%d]", i)
		nameOK := checkEnvName(e.Name, field+".name", seen, bad)
		v := envVar{field: field, name: e.Name, value: e.Value, file: e.File, env: e.Env}
		var set []string
		for _, s := range []struct{ name, val string }{{"value", e.Value}, {"file", e.File}, {"env", e.Env}} {
			if s.val != "" {
				set = append(set, s.name)
			}
		}
		if len(set) > 1 {
			bad(field, "sets %s: set exactly one of value, file (a mounted Secret's path) and env (a variable of the controller's environment)", strings.Join(set, " and "))
			continue
		}
		switch {
		case e.File != "":
			if _, err := readFile(e.File); err != nil {
				bad(field+".file", "%v", err)
				continue
			}
		case e.Env != "":
			if !validName(e.Env) {
				bad(field+".env", "%q is not an environment variable's name: use letters, digits and _, not starting with a digit", e.Env)
				continue
			}
			val, ok := w.lookupEnv(e.Env)
			if !ok {
				bad(field+".env", "environment variable %s is not set in the controller's environment: set it, or read the value from a file", e.Env)
				continue
			}
			if strings.IndexByte(val, 0) >= 0 {
				bad(field+".env", "environment variable %s holds a NUL byte, which no environment value can", e.Env)
				continue
			}
		default:
			if strings.IndexByte(e.Value, 0) >= 0 {
				bad(field+".value", "holds a NUL byte, which no environment value can")
				continue
			}
		}
		if nameOK {
			w.env = append(w.env, v)
		}
	}

	// gracePeriod
	if g := c.GracePeriod; g != nil {
		if g.Duration <= 0 {
			bad("spec.command.gracePeriod", "must be a positive duration such as 10s or 1m (got %s)", g.Duration)
		} else {
			w.grace = g.Duration
		}
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return w, nil
}

// checkProgram checks that the program args[0] names can be run: a name
// without a slash is looked up on the controller's PATH, a path (relative
// to the working directory dir, if any) must be an executable file. It
// returns what is wrong, or "".
func checkProgram(prog, dir string) string {
	if !strings.ContainsAny(prog, `/`+string(filepath.Separator)) {
		if _, err := exec.LookPath(prog); err != nil {
			if errors.Is(err, exec.ErrDot) {
				return fmt.Sprintf("%q is found only in the current directory, through a relative entry of the controller's PATH: give its path, such as ./%s", prog, prog)
			}
			return fmt.Sprintf("%q is not found on the controller's PATH: install it, or give its absolute path", prog)
		}
		return ""
	}
	p := prog
	if dir != "" && !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return fmt.Sprintf("cannot run %s: %v: fix the path, or install the program there", p, spec.UnwrapPath(err))
	case fi.IsDir():
		return fmt.Sprintf("%s is a directory, not a program", p)
	}
	if _, err := exec.LookPath(p); err != nil {
		return fmt.Sprintf("cannot run %s: %v: make it executable (chmod +x)", p, unwrapExec(err))
	}
	return ""
}

// checkEnvName checks a variable's name given at field, and that no other
// variable of the spec has it.
func checkEnvName(name, field string, seen map[string]string, bad func(field, format string, args ...any)) bool {
	switch {
	case name == "":
		bad(field, "missing: give the variable's name, such as API_TOKEN")
		return false
	case !validName(name):
		bad(field, "%q is not a valid environment variable name: use letters, digits and _, not starting with a digit (such as API_TOKEN)", name)
		return false
	case spec.IsSlotEnvName(name):
		bad(field, "%s is set by the command kind to the slot context: remove it, or use another name", name)
		return false
	}
	if other, dup := seen[name]; dup {
		bad(field, "%s is also set by %s: set each variable once", name, other)
		return false
	}
	seen[name] = field
	return true
}

// validName reports whether s is a portable environment variable name:
// ASCII letters, digits and _, not starting with a digit.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// readFile reads a variable's file: its content without trailing newlines.
// Its errors name the file, never the content.
func readFile(path string) (string, error) {
	v, err := spec.ReadValueFile(path)
	if err != nil {
		return "", err
	}
	if strings.IndexByte(v, 0) >= 0 {
		return "", fmt.Errorf("%s holds a NUL byte, which no environment value can", path)
	}
	return v, nil
}

// unwrapExec drops the name an *exec.Error repeats.
func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return spec.UnwrapPath(ee.Err)
	}
	return spec.UnwrapPath(err)
}
