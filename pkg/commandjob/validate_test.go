//go:build unix

package commandjob_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/pkg/commandjob"
	"github.com/leasecron/leasecron/pkg/spec"
)

// lookup is an environment holding only vars.
func lookup(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// A controller that does not allow command jobs refuses every one, valid
// or not, with one error on spec.command that says how to turn them on.
func TestOffUnlessAllowed(t *testing.T) {
	for _, c := range []*spec.Command{{Args: []string{"sh", "-c", "true"}}, {}} {
		_, err := spec.NewCatalog(commandjob.Kind{}).Definition(newJob(c), spec.Env{})
		fes := spec.FieldErrors(err)
		if len(fes) != 1 {
			t.Fatalf("args %q: got %d field errors, want 1: %v", c.Args, len(fes), err)
		}
		want := "job cmd: spec.command: command jobs are off in this controller: start it with --allow-command-jobs (it runs programs as the controller's user)"
		if fes[0].Job != jobName || fes[0].Field != "spec.command" || err.Error() != want {
			t.Fatalf("error = %q, want %q", err, want)
		}
	}
	if _, err := catalog().Definition(newJob(&spec.Command{Args: []string{"sh", "-c", "true"}}), spec.Env{}); err != nil {
		t.Fatalf("with Allowed: %v", err)
	}
}

// Every problem with spec.command is an error that names the job and the
// field, and says what is wrong.
func TestValidationNamesJobAndField(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	aFile := token
	env := spec.Env{LookupEnv: lookup(map[string]string{"TOKEN": "t0ken"})}
	base := func() *spec.Command { return &spec.Command{Args: []string{"sh", "-c", "true"}} }
	type edit func(c *spec.Command)
	cases := []struct {
		name  string
		edit  edit
		field string
		msg   string // a part of the message
	}{
		{"args missing", func(c *spec.Command) { c.Args = nil }, "spec.command.args", "missing"},
		{"program empty", func(c *spec.Command) { c.Args = []string{"", "x"} }, "spec.command.args[0]", "the program is empty"},
		{"program not on PATH", func(c *spec.Command) { c.Args = []string{"no-such-program-3b1f"} },
			"spec.command.args[0]", `"no-such-program-3b1f" is not found on the controller's PATH`},
		{"program path missing", func(c *spec.Command) { c.Args = []string{filepath.Join(dir, "nope")} },
			"spec.command.args[0]", "cannot run " + filepath.Join(dir, "nope") + ": no such file"},
		{"program is a directory", func(c *spec.Command) { c.Args = []string{dir} }, "spec.command.args[0]", dir + " is a directory"},
		{"program not executable", func(c *spec.Command) { c.Args = []string{notExec} }, "spec.command.args[0]", "make it executable"},
		{"relative program missing in workingDir", func(c *spec.Command) { c.Args = []string{"./nope"}; c.WorkingDir = dir },
			"spec.command.args[0]", "cannot run " + filepath.Join(dir, "nope")},
		{"argument with NUL", func(c *spec.Command) { c.Args = []string{"sh", "-c", "a\x00b"} }, "spec.command.args[2]", "NUL"},
		{"workingDir missing", func(c *spec.Command) { c.WorkingDir = filepath.Join(dir, "nope") }, "spec.command.workingDir", "no such file"},
		{"workingDir a file", func(c *spec.Command) { c.WorkingDir = aFile }, "spec.command.workingDir", "not a directory"},
		{"env name missing", func(c *spec.Command) { c.Env = []spec.EnvVar{{Value: "x"}} }, "spec.command.env[0].name", "missing"},
		{"env name starts with a digit", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "1ABC", Value: "x"}} },
			"spec.command.env[0].name", `"1ABC" is not a valid environment variable name`},
		{"env name with a dash", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A-B", Value: "x"}} }, "spec.command.env[0].name", "letters, digits and _"},
		{"env name with =", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A=B", Value: "x"}} }, "spec.command.env[0].name", "not a valid"},
		{"env name twice", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", Value: "x"}, {Name: "A", Env: "TOKEN"}} },
			"spec.command.env[1].name", "A is also set by spec.command.env[0]"},
		{"value and file", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", Value: "x", File: token}} },
			"spec.command.env[0]", "sets value and file: set exactly one of value, file"},
		{"file and env", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", Env: "TOKEN", File: token}} },
			"spec.command.env[0]", "sets file and env"},
		{"all three", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", Value: "x", Env: "TOKEN", File: token}} },
			"spec.command.env[0]", "sets value and file and env"},
		{"file missing", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", File: filepath.Join(dir, "nope")}} },
			"spec.command.env[0].file", "cannot read " + filepath.Join(dir, "nope")},
		{"file is a directory", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "B", Value: "1"}, {Name: "A", File: dir}} },
			"spec.command.env[1].file", "cannot read " + dir},
		{"env unset", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", Env: "UNSET"}} },
			"spec.command.env[0].env", "environment variable UNSET is not set"},
		{"env source not a name", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", Env: "NO-PE"}} },
			"spec.command.env[0].env", `"NO-PE" is not an environment variable's name`},
		{"value with NUL", func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: "A", Value: "a\x00b"}} }, "spec.command.env[0].value", "NUL"},
		{"gracePeriod zero", func(c *spec.Command) { c.GracePeriod = dur(0) }, "spec.command.gracePeriod", "positive"},
		{"gracePeriod negative", func(c *spec.Command) { c.GracePeriod = dur(-time.Second) }, "spec.command.gracePeriod", "positive"},
	}
	for _, name := range []string{"LEASECRON_SLOT", "LEASECRON_SLOT_DATE", "LEASECRON_PREV_SLOT", "LEASECRON_JOB", "LEASECRON_KEY", "LEASECRON_ATTEMPT", "LEASECRON_TERM"} {
		cases = append(cases, struct {
			name  string
			edit  edit
			field string
			msg   string
		}{"slot context " + name, func(c *spec.Command) { c.Env = []spec.EnvVar{{Name: name, Value: "x"}} },
			"spec.command.env[0].name", name + " is set by the command kind to the slot context"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := base()
			c.edit(cmd)
			_, err := catalog().Definition(newJob(cmd), env)
			if err == nil {
				t.Fatal("the job was accepted")
			}
			fes := spec.FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("got %d field errors, want 1: %v", len(fes), err)
			}
			fe := fes[0]
			if fe.Job != jobName || fe.Field != c.field || !strings.Contains(fe.Msg, c.msg) {
				t.Fatalf("error = %q (job %q, field %q), want job %q, field %q, a message with %q", err, fe.Job, fe.Field, jobName, c.field, c.msg)
			}
			if !strings.HasPrefix(err.Error(), "job "+jobName+": "+c.field+": ") {
				t.Fatalf("error = %q, want it to start with the job and the field", err)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "t0ken") {
				t.Fatalf("error = %q shows a secret", err)
			}
		})
	}
}

// A spec with several problems reports every one, in field order.
func TestValidationReportsEveryProblem(t *testing.T) {
	sj := newJob(&spec.Command{
		Args:        []string{"no-such-program-3b1f"},
		Env:         []spec.EnvVar{{Name: "LEASECRON_KEY", Value: "x"}, {Name: "A", Env: "UNSET"}, {Name: "B", Value: "x", Env: "UNSET"}},
		GracePeriod: dur(0),
	})
	_, err := catalog().Definition(sj, spec.Env{LookupEnv: lookup(nil)})
	var got []string
	for _, fe := range spec.FieldErrors(err) {
		got = append(got, fe.Field)
	}
	want := []string{"spec.command.args[0]", "spec.command.env[0].name", "spec.command.env[1].env", "spec.command.env[2]", "spec.command.gracePeriod"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("fields = %q, want %q (error: %v)", got, want, err)
	}
}

// A valid spec builds a jobs.Job of kind command: a program on PATH or by
// path (relative to workingDir), variables from values (empty too), files
// and the controller's environment.
func TestValidSpecBuilds(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := spec.Env{LookupEnv: lookup(map[string]string{"TOKEN": ""})}
	for _, c := range []*spec.Command{
		{Args: []string{"sh", "-c", "true"}},
		{Args: []string{script}},
		{Args: []string{"./run.sh"}, WorkingDir: dir},
		{Args: []string{"sh"}, Env: []spec.EnvVar{{Name: "a_1", Value: "x"}, {Name: "_B"}, {Name: "C", File: token}, {Name: "D", Env: "TOKEN"}, {Name: "PATH", Value: "/bin"}},
			GracePeriod: dur(time.Millisecond)},
	} {
		def := definition(t, newJob(c), env)
		if def.Kind != "command" {
			t.Fatalf("Kind = %q, want command", def.Kind)
		}
		if _, ok := def.Work.(*commandjob.Job); !ok {
			t.Fatalf("Work is %T, want *commandjob.Job", def.Work)
		}
	}
	if (commandjob.Kind{}).Name() != "command" {
		t.Fatalf("Name() = %q", (commandjob.Kind{}).Name())
	}
}
