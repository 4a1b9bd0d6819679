//go:build bench

// Package bench measures leasecron side by side with what its users would run
// instead, on this machine, and writes BENCHMARKS.md. It is `make bench`, not
// part of `make test`: it takes minutes and asserts nothing about speed; the
// report states the targets next to the numbers.
//
// Every measurement runs real processes against real servers: the leasecron
// binary built as the Dockerfile builds it, the alternatives in ./alt, a
// kube-apiserver and etcd from internal/testenv/kube, and MariaDB, PostgreSQL
// and SQLite from internal/testenv. Times are taken from the processes' own
// log timestamps (the same clock as the harness's), from the signal to the
// first "leading" line of the process that takes over.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

var (
	outFlag    = flag.String("out", "", "write the report to this file (default: only log it)")
	trialsFlag = flag.Int("trials", 7, "trials of each timing")
)

// bin holds the binaries under test.
var bin struct{ leasecron, alt, version string }

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "leasecron-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bin.leasecron, bin.version, err = testenv.BuildLeasecron(dir); err == nil {
		bin.alt = filepath.Join(dir, "alt")
		if out, berr := exec.Command("go", "build", "-trimpath", "-o", bin.alt, "./alt").CombinedOutput(); berr != nil {
			err = fmt.Errorf("build alt: %w\n%s", berr, out)
		}
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = testenv.Run(m)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running process whose JSON log lines are read as events.
type proc struct {
	name   string
	cmd    *exec.Cmd
	events chan event
	done   chan struct{}
}

type event struct {
	msg string
	at  time.Time // the process's own timestamp
}

func start(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, events: make(chan event, 1000), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m struct {
				Msg  string    `json:"msg"`
				Time time.Time `json:"time"`
			}
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg != "" {
				select {
				case p.events <- event{m.Msg, m.Time}:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// await returns the time of the first event whose message starts with
// prefix, or false after timeout.
func (p *proc) await(prefix string, timeout time.Duration) (time.Time, bool) {
	deadline := time.After(timeout)
	for {
		select {
		case e := <-p.events:
			if strings.HasPrefix(e.msg, prefix) {
				return e.at, true
			}
		case <-deadline:
			return time.Time{}, false
		}
	}
}

func (p *proc) mustAwait(t *testing.T, prefix string, timeout time.Duration) time.Time {
	t.Helper()
	at, ok := p.await(prefix, timeout)
	if !ok {
		t.Fatalf("%s: no %q within %s", p.name, prefix, timeout)
	}
	return at
}

// series is the samples of one measurement; never counts trials in which
// nothing happened before the timeout.
type series struct {
	samples []time.Duration
	never   int
}

func (s *series) add(d time.Duration, ok bool) {
	if ok {
		s.samples = append(s.samples, d)
	} else {
		s.never++
	}
}

func (s series) sorted() []time.Duration {
	c := slices.Clone(s.samples)
	slices.Sort(c)
	return c
}

func (s series) median() time.Duration {
	c := s.sorted()
	if len(c) == 0 {
		return 0
	}
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// cell formats the median and the range, or "never".
func (s series) cell() string {
	if len(s.samples) == 0 {
		return fmt.Sprintf("never (%d of %d trials)", s.never, s.never)
	}
	c := s.sorted()
	out := fmt.Sprintf("%s (%s – %s)", round(s.median()), round(c[0]), round(c[len(c)-1]))
	if s.never == 1 {
		out += ", never in 1 trial"
	} else if s.never > 1 {
		out += fmt.Sprintf(", never in %d trials", s.never)
	}
	return out
}

// ratio says how many times faster a is than b, by median.
func ratio(a, b series) string {
	if len(a.samples) == 0 {
		return "—"
	}
	if len(b.samples) == 0 {
		return "∞ (it never takes over)"
	}
	return fmt.Sprintf("%.1f× faster", float64(b.median())/float64(a.median()))
}

// report collects the tables of BENCHMARKS.md.
type report struct {
	mu       sync.Mutex
	sections []string
}

func (r *report) add(title, intro string, header []string, rows [][]string) {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n%s\n\n", title, intro)
	b.WriteString(markdownTable(header, rows))
	r.mu.Lock()
	r.sections = append(r.sections, b.String())
	r.mu.Unlock()
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%s, %d cores%s, %s, %s/%s", model, runtime.NumCPU(), mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func TestBenchmarks(t *testing.T) {
	r := &report{}
	started := time.Now()
	t.Run("filelock", func(t *testing.T) { benchFileLock(t, r) })
	t.Run("daily-stats", func(t *testing.T) { benchDailyStats(t, r) })
	t.Run("cutoff", func(t *testing.T) { benchCutOff(t, r) })
	t.Run("lease", func(t *testing.T) { benchLease(t, r) })
	t.Run("election", func(t *testing.T) { benchElection(t, r) })
	t.Run("sql-burst", func(t *testing.T) { benchBurst(t, r) })
	t.Run("beside", func(t *testing.T) { benchBeside(t, r) })
	t.Run("http-lag", func(t *testing.T) { benchHTTPLag(t, r) })
	t.Run("retention", func(t *testing.T) { benchRetention(t, r) })
	t.Run("prune-pass", func(t *testing.T) { benchPrunePass(t, r) })
	t.Run("cronjob", func(t *testing.T) { benchCronJob(t, r) })

	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `make bench` (`test/bench`); rerun it to regenerate this file. " +
		"Each timing is the median of repeated trials with the range (fastest – slowest) in brackets. " +
		"Every run uses real processes and real servers on this one machine, so other load on it shows up here.\n\n")
	fmt.Fprintf(&b, "- machine: %s\n- leasecron: %s\n- date: %s; the whole run took %s\n\n",
		machine(), bin.version, time.Now().UTC().Format("2006-01-02"), time.Since(started).Round(time.Second))
	for _, s := range r.sections {
		b.WriteString(s + "\n")
	}
	t.Log("\n" + b.String())
	if *outFlag != "" {
		if err := os.WriteFile(*outFlag, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// benchFileLock: the leader is killed with SIGKILL; how long until a standby
// on the same lock file leads.
func benchFileLock(t *testing.T, r *report) {
	kinds := []struct{ name, label string }{
		{"leasecron", "leasecron `--mode filelock`"},
		{"trylock-poll", "lock file, losers poll a non-blocking lock every second"},
		{"trylock-once", "lock file, losers try once and give up (the setup leasecron replaces)"},
	}
	results := map[string]*series{}
	for _, k := range kinds {
		s := &series{}
		results[k.name] = s
		for i := 0; i < *trialsFlag; i++ {
			d, ok := fileLockTrial(t, k.name)
			s.add(d, ok)
		}
	}
	var rows [][]string
	for _, k := range kinds {
		ratioCell := "—"
		if k.name != "leasecron" {
			ratioCell = ratio(*results["leasecron"], *results[k.name])
		}
		rows = append(rows, []string{k.label, results[k.name].cell(), ratioCell})
	}
	r.add("File-lock takeover",
		"Two processes on one lock file; the leader gets SIGKILL; time until the standby's first `leading` log line "+
			"(for leasecron that is after it has also begun a new term in its SQLite database). "+
			"A standby that has not led within 5 s counts as never. Target: leasecron under 50 ms.",
		[]string{"contender", "takeover", "leasecron is"}, rows)
}

func fileLockTrial(t *testing.T, kind string) (time.Duration, bool) {
	dir := t.TempDir()
	lock := filepath.Join(dir, "leasecron.lock")
	launch := func(id string) *proc {
		if kind == "leasecron" {
			return start(t, id, bin.leasecron, "run", "--mode", "filelock", "--lock-file", lock,
				"--database-dsn", "sqlite://"+filepath.Join(dir, "db.sqlite"), "--http-addr", "127.0.0.1:0",
				"--log-format", "json", "--identity", id, "--schedule", "daily-stats=@every 1h")
		}
		return start(t, id, bin.alt, "-mode", kind, "-lock-file", lock, "-identity", id)
	}
	standby := "standing by"
	if kind == "leasecron" {
		standby = "waiting for the file lock"
	}
	a := launch("a")
	a.mustAwait(t, "leading", 30*time.Second)
	b := launch("b")
	b.mustAwait(t, standby, 30*time.Second)
	killed := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	at, ok := b.await("leading", 5*time.Second)
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	<-b.done
	return at.Sub(killed), ok
}

// benchDailyStats: one slot of daily-stats through the ledger, in process,
// and a backfill of 3650 dates with the CLI, on each dialect.
func benchDailyStats(t *testing.T, r *report) {
	var rows [][]string
	for _, d := range testenv.Dialects() {
		one := slotLatency(t, d, 10**trialsFlag)
		var fill series
		for i := 0; i < max(3, *trialsFlag/2); i++ {
			fill.add(backfillTrial(t, d), true)
		}
		rows = append(rows, []string{d, one.cell(), fill.cell()})
	}
	r.add("daily-stats",
		"One slot: claim, the four inserts and the succeeded mark, through the ledger as a leader runs it "+
			"(in process, one date per trial). Backfill: `leasecron backfill daily-stats` over 3650 dates "+
			"into an empty database, wall time of the command. Servers are the test harness's own throwaway "+
			"MariaDB and PostgreSQL on loopback. Target: backfill under 2 s on MariaDB.",
		[]string{"database", "one slot", "backfill of 3650 dates"}, rows)
}

func backfillTrial(t *testing.T, dialect string) time.Duration {
	dsn := testenv.DSN(t, dialect)
	if out, err := exec.Command(bin.leasecron, "migrate", "--database-dsn", dsn, "--log-level", "error").CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	from := time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 3649)
	cmd := exec.Command(bin.leasecron, "backfill", "daily-stats", "--from", from.Format(time.DateOnly), "--to", to.Format(time.DateOnly),
		"--database-dsn", dsn, "--timezone", "UTC", "--log-level", "error")
	began := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(began)
	if err != nil || !strings.Contains(string(out), "3650 succeeded") {
		t.Fatalf("backfill: %v\n%s", err, out)
	}
	return took
}

// openMigrated opens and migrates the database of raw, closed in t.Cleanup.
func openMigrated(t *testing.T, raw string) *gorm.DB {
	t.Helper()
	ctx := context.Background()
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.Open(ctx, dsn, 30*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(db) })
	if err := jobs.Migrate(ctx, db, []jobs.Definition{{Name: dailystats.Name, Work: dailystats.Job{}}}); err != nil {
		t.Fatal(err)
	}
	return db
}

// slotLatency runs n slots of daily-stats, one date each, through the
// ledger under a real leadership term.
func slotLatency(t *testing.T, dialect string, n int) series {
	ctx := context.Background()
	db := openMigrated(t, testenv.DSN(t, dialect))
	sched, err := jobs.ParseSchedule(dailystats.DefaultSchedule, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	job := jobs.Definition{Name: dailystats.Name, Schedule: sched, Work: dailystats.Job{}}
	s, err := jobs.New(db, "bench", []jobs.Definition{job}, jobs.Options{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	fence, err := s.Ledger().BeginTerm(ctx, "bench")
	if err != nil {
		t.Fatal(err)
	}
	var out series
	first := time.Date(2000, 1, 1, 0, 0, 50, 0, time.UTC)
	for i := 0; i < n; i++ {
		began := time.Now()
		res, err := s.RunSlot(ctx, fence, job.Name, first.AddDate(0, 0, i), time.Now().Add(time.Minute))
		if err != nil || res != jobs.Succeeded {
			t.Fatalf("slot %d: %v, %v", i, res, err)
		}
		out.add(time.Since(began), true)
	}
	return out
}
