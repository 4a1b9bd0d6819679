package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// execute runs the command line in-process with a clean LEASECRON_*
// environment and returns the exit code, stdout and stderr.
func execute(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "LEASECRON_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	code := Execute(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestBadInput: each rejected input exits 2 with one line on stderr that
// names the problem and the fix, and leaves the working directory empty.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"invalid cron", nil, []string{"run", "--schedule", "daily-stats=61 * * * * *"}, `cron expression "61 * * * * *" is not valid`},
		{"cron never fires", nil, []string{"run", "--schedule", "daily-stats=0 0 0 30 2 *"}, "never fires"},
		{"schedule with its own zone", nil, []string{"run", "--schedule", "daily-stats=TZ=UTC @daily"}, "sets its own time zone: remove the prefix and use --timezone"},
		{"schedule not JOB=EXPR", nil, []string{"run", "--schedule", "@daily"}, "is not JOB=EXPR"},
		{"unknown job in schedule", nil, []string{"run", "--schedule", "weekly-report=@weekly"}, `unknown job "weekly-report": --schedule sets only daily-stats; define other jobs in --jobs-file`},
		{"unknown time zone", nil, []string{"run", "--timezone", "Mars/Olympus"}, `--timezone "Mars/Olympus" is not a known time zone`},
		{"unknown DSN scheme", nil, []string{"run", "--database-dsn", "oracle://u:p@h/db"}, `scheme "oracle" is not supported`},
		{"DSN without scheme", nil, []string{"run", "--database-dsn", "leasecron.db"}, "has no scheme"},
		{"unparsable DSN body", nil, []string{"run", "--database-dsn", "mysql://u:p@h:port/db"}, "mysql DSN is not a valid URL"},
		{"DSN without database", nil, []string{"run", "--database-dsn", "postgres://u:p@/db"}, "postgres DSN has no host"},
		{"DSN file missing", nil, []string{"run", "--database-dsn-file", "/nonexistent/dsn"}, "cannot read --database-dsn-file"},
		{"DSN and DSN file", nil, []string{"migrate", "--database-dsn", "sqlite://x.db", "--database-dsn-file", "/nonexistent/dsn"}, "--database-dsn and --database-dsn-file are both set: give only one"},
		{"DSN from env and DSN file", map[string]string{"LEASECRON_DATABASE_DSN": "sqlite://x.db"}, []string{"status", "--database-dsn-file", "/nonexistent/dsn"}, "--database-dsn (from LEASECRON_DATABASE_DSN) and --database-dsn-file are both set: give only one"},
		{"status without a database", nil, []string{"status"}, "no database at "},
		{"verify without a database", nil, []string{"verify"}, "no database at "},
		{"dedupe without a database", nil, []string{"dedupe", "--apply"}, "no database at "},
		{"renew deadline not below lease duration", nil, []string{"run", "--renew-deadline", "15s"}, "--renew-deadline (15s) must be below --lease-duration (15s)"},
		{"retry period too long", nil, []string{"run", "--retry-period", "9s"}, "must be above 1.2 × --retry-period"},
		{"zero lease duration", nil, []string{"run", "--lease-duration", "0s"}, "--lease-duration must be positive"},
		{"lease duration not whole seconds", nil, []string{"run", "--lease-duration", "15500ms"}, "--lease-duration must be a whole number of seconds, as a Lease records it (got 15.5s)"},
		{"negative job timeout", nil, []string{"run", "--job-timeout", "-1s"}, "--job-timeout must be a positive duration"},
		{"zero database-lost timeout", nil, []string{"run", "--database-lost-timeout", "0s"}, "--database-lost-timeout must be a positive duration"},
		{"zero catch-up window", nil, []string{"run", "--catch-up-window", "0"}, "--catch-up-window must be a positive duration"},
		{"negative catch-up limit", nil, []string{"run", "--catch-up-limit", "-1"}, "--catch-up-limit must be 0 or more"},
		{"negative history retention", nil, []string{"run", "--history-retention", "-1h"}, "--history-retention must be 0 (keep forever) or a positive duration such as 168h (got -1h0m0s)"},
		{"not a duration", nil, []string{"run", "--job-timeout", "ten minutes"}, `invalid argument "ten minutes" for "--job-timeout"`},
		{"lease mode without a cluster", map[string]string{"KUBECONFIG": "/nonexistent/kubeconfig", "HOME": "/nonexistent"}, []string{"run", "--mode", "lease"}, "--mode lease needs a cluster"},
		{"unknown mode", nil, []string{"run", "--mode", "raft"}, `--mode "raft" is not valid`},
		{"unknown jobs source", nil, []string{"run", "--jobs-source", "etcd"}, `--jobs-source "etcd" is not valid: use file or cluster`},
		{"cluster jobs and a jobs file", nil, []string{"run", "--jobs-source", "cluster", "--jobs-file", "/nonexistent/jobs.yaml"}, "--jobs-source cluster and --jobs-file are both set"},
		{"cluster jobs in filelock mode", nil, []string{"run", "--jobs-source", "cluster", "--mode", "filelock"}, "--jobs-source cluster needs lease mode"},
		{"kubernetes jobs in filelock mode", nil, []string{"run", "--allow-kubernetes-jobs", "--mode", "filelock"}, "--allow-kubernetes-jobs needs lease mode"},
		{"no database connections", nil, []string{"run", "--database-max-connections", "0"}, "--database-max-connections must be 1 or more (got 0)"},
		{"kubeconfig missing", nil, []string{"run", "--kubeconfig", "/nonexistent/kubeconfig"}, "--kubeconfig /nonexistent/kubeconfig cannot be read"},
		{"lock dir missing", nil, []string{"run", "--lock-file", "/nonexistent/dir/leasecron.lock"}, "lock file directory /nonexistent/dir does not exist"},
		{"bad http addr", nil, []string{"run", "--http-addr", "8080"}, `--http-addr "8080" is not HOST:PORT`},
		{"bad log format", nil, []string{"run", "--log-format", "xml"}, `--log-format "xml" is not valid`},
		{"bad log level", nil, []string{"run", "--log-level", "loud"}, `--log-level "loud" is not valid`},
		{"unknown flag", nil, []string{"run", "--frobnicate"}, "unknown flag: --frobnicate"},
		{"unknown command", nil, []string{"frobnicate"}, `unknown command "frobnicate" for "leasecron": run 'leasecron --help' for the commands`},
		{"bad env value", map[string]string{"LEASECRON_JOB_TIMEOUT": "soon"}, []string{"run"}, "environment variable LEASECRON_JOB_TIMEOUT is not valid for --job-timeout"},
		{"bad env schedule", map[string]string{"LEASECRON_SCHEDULE": "daily-stats=every day"}, []string{"run"}, `cron expression "every day" is not valid`},
		{"negative @every", nil, []string{"run", "--schedule", "daily-stats=@every -1h"}, `--schedule daily-stats: cron expression "@every -1h" is not valid: @every needs a whole number of seconds, 1s or more, such as @every 90s or @every 1h`},
		{"once unknown job", nil, []string{"once", "weekly-report"}, `unknown job "weekly-report"`},
		{"once bad date", nil, []string{"once", "daily-stats", "--date", "24/11/2026"}, `--date "24/11/2026" is not a date`},
		{"once future date", nil, []string{"once", "daily-stats", "--date", "2999-01-01"}, "is in the future"},
		{"once no job", nil, []string{"once"}, "needs exactly one JOB argument"},
		{"backfill reversed", nil, []string{"backfill", "daily-stats", "--from", "2026-02-01", "--to", "2026-01-01"}, "--to 2026-01-01 is before --from 2026-02-01"},
		{"backfill no range", nil, []string{"backfill", "daily-stats"}, "backfill needs --from and --to"},
		{"verify bad date", nil, []string{"verify", "--from", "yesterday"}, `--from "yesterday" is not a date`},
		{"status bad limit", nil, []string{"status", "--limit", "0"}, "--limit must be at least 1"},
		{"unknown output format", nil, []string{"status", "-o", "xml"}, `--output "xml" is not valid: use table, json or yaml`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			args := tc.args
			// Point every writer at the temp dir, unless the case sets it.
			if !hasFlag(args, "--database-dsn") && !hasFlag(args, "--database-dsn-file") && args[0] != "frobnicate" {
				args = append(args, "--database-dsn", "sqlite://"+filepath.Join(dir, "x.db"))
			}
			code, stdout, stderr := execute(t, tc.env, args...)
			if code != ExitUsage {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, ExitUsage, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr = %q, want one line containing %q", stderr, tc.want)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("bad input wrote %v", entries)
			}
		})
	}
}

// TestReadOnlyCommandsCreateNoDatabase: with no DSN, in an empty directory,
// the commands that only read or change what a database holds say that
// there is none and how to fix it, exit 2, and create no leasecron.db.
func TestReadOnlyCommandsCreateNoDatabase(t *testing.T) {
	for _, args := range [][]string{{"status"}, {"verify"}, {"verify", "--from", "2026-01-01", "--to", "2026-01-02"}, {"dedupe"}, {"dedupe", "--apply"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			code, stdout, stderr := execute(t, nil, args...)
			if code != ExitUsage {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, ExitUsage, stderr)
			}
			const want = "leasecron: no database at leasecron.db: give --database-dsn or --database-dsn-file, or run 'leasecron migrate' first\n"
			if stderr != want || stdout != "" {
				t.Fatalf("stdout %q, stderr %q; want only the line %q", stdout, stderr, want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("wrote %v", entries)
			}
		})
	}
}

// TestDSNFileHelpMatchesBehaviour: the help of --database-dsn-file says
// what happens when --database-dsn is given too (it is refused).
func TestDSNFileHelpMatchesBehaviour(t *testing.T) {
	code, stdout, stderr := execute(t, nil, "migrate", "--help")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var help string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Contains(l, "--database-dsn-file") {
			help = l
		}
	}
	if !strings.Contains(help, "with --database-dsn is refused") || strings.Contains(help, "overrides") {
		t.Fatalf("--database-dsn-file help = %q, want it to say that giving both is refused", help)
	}
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

func TestUnreachableDatabaseExits1WithRedactedDSN(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	code, _, stderr := execute(t, nil, "migrate", "--database-dsn", "mysql://app:hunter2@127.0.0.1:1/stats",
		"--database-connect-timeout", "600ms", "--log-format", "json")
	// It keeps trying for the whole timeout, not until the next backoff
	// would pass it.
	if elapsed := time.Since(start); elapsed < 600*time.Millisecond {
		t.Errorf("gave up after %s, before --database-connect-timeout 600ms", elapsed)
	}
	if code != ExitFailure {
		t.Fatalf("exit code %d, want 1; stderr: %s", code, stderr)
	}
	if strings.Contains(stderr, "hunter2") {
		t.Fatalf("the password leaked: %s", stderr)
	}
	last := lastLine(stderr)
	if !strings.Contains(last, "mysql://app:xxxxx@127.0.0.1:1/stats is unreachable after") {
		t.Fatalf("last line = %q, want the redacted DSN and 'unreachable'", last)
	}
	if !strings.Contains(stderr, "retrying") {
		t.Fatalf("no retry was logged: %s", stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("wrote %v", entries)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestEnvironmentConfiguresFlags(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite://" + filepath.Join(dir, "env.db")
	code, stdout, stderr := execute(t, map[string]string{"LEASECRON_DATABASE_DSN": db}, "migrate")
	if code != ExitOK || !strings.Contains(stdout, "migrated "+db) {
		t.Fatalf("migrate from env: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// The command line wins over the environment.
	db2 := "sqlite://" + filepath.Join(dir, "flag.db")
	code, stdout, _ = execute(t, map[string]string{"LEASECRON_DATABASE_DSN": db}, "migrate", "--database-dsn", db2)
	if code != ExitOK || !strings.Contains(stdout, "migrated "+db2) {
		t.Fatalf("flag did not win over env: %q", stdout)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := execute(t, nil, "version")
	if code != ExitOK || !strings.HasPrefix(stdout, "leasecron ") {
		t.Fatalf("version: %d %q", code, stdout)
	}
}

func TestHTTPPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	code, _, stderr := execute(t, nil, "run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "x.lock"),
		"--database-dsn", "sqlite://"+filepath.Join(dir, "x.db"), "--http-addr", ln.Addr().String(), "--log-level", "error")
	if code != ExitUsage {
		t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr)
	}
	if want := "cannot listen on --http-addr " + ln.Addr().String() + ": address already in use"; !strings.Contains(lastLine(stderr), want) {
		t.Fatalf("stderr = %q, want a line containing %q", stderr, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("wrote %v", entries)
	}
}

// TestLogAttributeForms: in JSON and text logs a duration is written in
// readable units, never nanoseconds, and a slot is an RFC 3339 string in
// UTC, whether it was logged as a time (in any zone) or as a string in the
// job's zone.
func TestLogAttributeForms(t *testing.T) {
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	slot := time.Date(2026, 1, 20, 0, 0, 50, 0, shanghai)
	const wantSlot = "2026-01-19T16:00:50Z"
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := (&logOptions{format: format, level: "info"}).logger(&buf)
			if err != nil {
				t.Fatal(err)
			}
			log.Info("as time", "slot", slot, "duration", 2563089*time.Nanosecond, "retry_in", 250*time.Millisecond)
			log.Info("as string", "slot", slot.Format(time.RFC3339))
			log.With("job", "daily-stats").Info("as any", slog.Any("slot", slot), slog.Any("window", 48*time.Hour))
			lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("logged %d lines, want 3:\n%s", len(lines), buf.String())
			}
			want := []map[string]string{
				{"slot": wantSlot, "duration": "2.563089ms", "retry_in": "250ms"},
				{"slot": wantSlot},
				{"slot": wantSlot, "window": "48h0m0s"},
			}
			for i, line := range lines {
				for key, value := range want[i] {
					if format == "text" {
						if !strings.Contains(line, " "+key+"="+value) {
							t.Errorf("line %q lacks %s=%s", line, key, value)
						}
						continue
					}
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("line %q is not JSON: %v", line, err)
					}
					if got, ok := m[key].(string); !ok || got != value {
						t.Errorf("%s = %#v (%T), want the string %q", key, m[key], m[key], value)
					}
				}
			}
		})
	}
}

// TestSlotLogLine: the "slot succeeded" line a real slot logs carries the slot
// in UTC and its duration in readable units.
func TestSlotLogLine(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := execute(t, nil, "once", "daily-stats", "--date", "2026-01-20", "--timezone", "Asia/Shanghai",
		"--database-dsn", "sqlite://"+filepath.Join(dir, "x.db"), "--log-format", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var line map[string]any
	for _, l := range strings.Split(stderr, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "slot succeeded" {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no 'slot succeeded' line in:\n%s", stderr)
	}
	if line["slot"] != "2026-01-19T16:00:50Z" {
		t.Errorf("slot = %#v, want \"2026-01-19T16:00:50Z\"", line["slot"])
	}
	d, ok := line["duration"].(string)
	if !ok {
		t.Fatalf("duration = %#v (%T), want a string such as \"2.5ms\"", line["duration"], line["duration"])
	}
	if v, err := time.ParseDuration(d); err != nil || v <= 0 {
		t.Errorf("duration %q does not parse as a positive duration: %v", d, err)
	}
}

// TestBadJobsFile: a jobs file with problems is refused before anything is
// opened or written, with exit 2 and one line per problem that names the
// file, the job, the field and the fix — by run, validate, jobs and once alike.
func TestBadJobsFile(t *testing.T) {
	const head = "apiVersion: leasecron.io/v1alpha1\nkind: ScheduledJob\n"
	for _, tc := range []struct {
		name string
		text string
		want []string
	}{
		{"not YAML", "::: [", []string{"document 1: not a ScheduledJob"}},
		{"wrong apiVersion", "apiVersion: batch/v1\nkind: ScheduledJob\nmetadata: {name: a}\n", []string{`apiVersion "batch/v1": want apiVersion: leasecron.io/v1alpha1`}},
		{"wrong kind", "apiVersion: leasecron.io/v1alpha1\nkind: CronJob\nmetadata: {name: a}\n", []string{`kind "CronJob": want kind: ScheduledJob`}},
		{"no kind", head + "metadata: {name: a}\nspec: {schedule: '@daily'}\n", []string{"job a: spec: no kind: set exactly one of"}},
		{"two kinds", head + "metadata: {name: a}\nspec: {schedule: '@daily', dailyStats: {}, http: {url: 'http://x'}}\n", []string{"job a: spec: two kinds (dailyStats and http): set exactly one"}},
		{"duplicate names", head + "metadata: {name: a}\nspec: {schedule: '@daily', dailyStats: {}}\n---\n" + head + "metadata: {name: a}\nspec: {schedule: '@daily', dailyStats: {}}\n", []string{"job a: metadata.name: defined twice"}},
		{"invalid name", head + "metadata: {name: A_b}\nspec: {schedule: '@daily', dailyStats: {}}\n", []string{`job A_b: metadata.name: "A_b" is not a DNS-1123 label`}},
		{"invalid schedule and zone", head + "metadata: {name: a}\nspec: {schedule: 'every day', timeZone: Mars/Olympus, dailyStats: {}}\n", []string{"job a: spec.timeZone:", "job a: spec.schedule:"}},
		{"zero timeout, limit and backoff", head + "metadata: {name: a}\nspec: {schedule: '@daily', timeout: 0s, catchUp: {limit: 0}, retries: {backoff: {initial: 0s}}, dailyStats: {}}\n",
			[]string{"job a: spec.catchUp.limit: must be 1 or more", "job a: spec.timeout: must be a positive duration", "job a: spec.retries.backoff.initial: must be a positive duration"}},
		{"http url not absolute", head + "metadata: {name: a}\nspec: {schedule: '@daily', http: {url: '/tasks/expire'}}\n", []string{"job a: spec.http.url:"}},
		{"http template unknown field", head + "metadata: {name: a}\nspec: {schedule: '@daily', http: {url: 'http://x/{{.Nope}}'}}\n", []string{"job a: spec.http.url: template fails on the slot context, whose fields are .Slot, .SlotDate, .PrevSlot, .Job and .Key"}},
		{"http template does not parse", head + "metadata: {name: a}\nspec: {schedule: '@daily', http: {url: 'http://x', body: '{{.Slot'}}\n", []string{"job a: spec.http.body:"}},
		{"command jobs off", head + "metadata: {name: a}\nspec: {schedule: '@daily', command: {args: [true]}}\n", []string{"job a: spec.command: command jobs are off in this controller: start it with --allow-command-jobs"}},
		{"http headersFrom file missing", head + "metadata: {name: a}\nspec: {schedule: '@daily', http: {url: 'http://x', headersFrom: [{name: Authorization, file: /nonexistent/token}]}}\n", []string{"job a: spec.http.headersFrom[0].file:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, t.TempDir(), "jobs.yaml", tc.text)
			for _, args := range [][]string{
				{"run", "--jobs-file", file},
				{"validate", "--jobs-file", file},
				{"jobs", "--jobs-file", file},
				{"once", "a", "--jobs-file", file},
			} {
				dir := t.TempDir()
				t.Chdir(dir)
				if args[0] != "validate" && args[0] != "jobs" {
					args = append(args, "--database-dsn", "sqlite://"+filepath.Join(dir, "x.db"))
				}
				code, stdout, stderr := execute(t, nil, args...)
				if code != ExitUsage {
					t.Fatalf("%s: exit code %d, want %d; stderr: %s", args[0], code, ExitUsage, stderr)
				}
				lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
				if len(lines) != len(tc.want) {
					t.Errorf("%s: %d lines on stderr, want %d:\n%s", args[0], len(lines), len(tc.want), stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("%s: stderr does not say %q:\n%s", args[0], w, stderr)
					}
				}
				for _, l := range lines {
					if !strings.HasPrefix(l, "leasecron: "+file+": ") {
						t.Errorf("%s: line %q does not name the file", args[0], l)
					}
				}
				if stdout != "" {
					t.Errorf("%s: stdout = %q, want nothing", args[0], stdout)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("%s: bad input wrote %v", args[0], entries)
				}
			}
		})
	}
}
