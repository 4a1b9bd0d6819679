//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// This file holds what the job sections (jobs_test.go, pgcron_test.go)
// share: a leasecron `run` process whose every JSON log line is kept, jobs
// files, the bench_hits table the sql jobs write, and percentiles.

// logLine is one JSON log line of a runner.
type logLine struct {
	msg   string
	at    time.Time // the process's own timestamp
	attrs map[string]any
}

func (l logLine) str(key string) string { s, _ := l.attrs[key].(string); return s }

// runner is one `leasecron run --mode filelock` process. Unlike proc, it
// drops no line: a burst of 1,000 slots logs 1,000 lines.
type runner struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	lines chan logLine
	done  chan struct{}
	addr  string    // its /metrics
	led   time.Time // its "leading" line

	mu     sync.Mutex
	log    bytes.Buffer   // the last lines, for a failure's message
	counts map[string]int // lines so far, by message
	errs   map[string]int // the err attributes of the "slot attempt failed, retrying" lines, counted
}

// retryErrors returns the errors of the attempts the process retried so
// far, the most frequent first, with their counts.
func (r *runner) retryErrors() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(r.errs), func(a, b string) int { return r.errs[b] - r.errs[a] })
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%d× %s", r.errs[k], k))
	}
	return strings.Join(out, "; ")
}

// count is how many lines with message msg the process has written so far.
func (r *runner) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[msg]
}

// startRunner starts leasecron run in filelock mode on dsn, with jobsFile
// ("" for the built-in daily-stats job), in UTC, and waits until it leads.
func startRunner(t *testing.T, name, dsn, jobsFile string, extra ...string) *runner {
	t.Helper()
	dir := t.TempDir()
	args := []string{"run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"),
		"--database-dsn", dsn, "--http-addr", "127.0.0.1:0", "--log-format", "json",
		"--identity", name, "--timezone", "UTC"}
	if jobsFile != "" {
		args = append(args, "--jobs-file", jobsFile)
	}
	cmd := exec.Command(bin.leasecron, append(args, extra...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &runner{t: t, name: name, cmd: cmd, lines: make(chan logLine, 1<<17), done: make(chan struct{}), counts: map[string]int{}, errs: map[string]int{}}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			r.mu.Lock()
			if r.log.Len() > 64<<10 {
				keep := slices.Clone(r.log.Bytes()[r.log.Len()-32<<10:])
				r.log.Reset()
				r.log.Write(keep)
			}
			r.log.Write(sc.Bytes())
			r.log.WriteByte('\n')
			r.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			l := logLine{attrs: m}
			l.msg, _ = m["msg"].(string)
			r.mu.Lock()
			r.counts[l.msg]++
			if l.msg == "slot attempt failed, retrying" {
				r.errs[errClass(l.str("err"))]++
			}
			r.mu.Unlock()
			if ts, ok := m["time"].(string); ok {
				l.at, _ = time.Parse(time.RFC3339Nano, ts)
			}
			r.lines <- l // the buffer holds far more than any section logs
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.done
	})
	l := r.mustAwait("http server listening", 60*time.Second)
	r.addr = l.str("addr")
	r.led = r.mustAwait("leading", 60*time.Second).at
	return r
}

// errClass drops the job and slot from an attempt's error ("claim j0001
// slot 2026-…: "), so that errors of one kind count together.
func errClass(err string) string {
	if i := strings.LastIndex(err, "Z: "); i >= 0 {
		err = err[i+3:]
	}
	// pgx names the database and the port of a refused connection.
	if i := strings.Index(err, "server error: "); i >= 0 {
		err = err[i+len("server error: "):]
	}
	return err
}

// await returns the next line with message msg (and, if ok is not nil, for
// which ok holds), or false after timeout.
func (r *runner) await(msg string, timeout time.Duration, ok func(logLine) bool) (logLine, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case l := <-r.lines:
			if l.msg == msg && (ok == nil || ok(l)) {
				return l, true
			}
		case <-r.done:
			// Drain what the process wrote before it exited.
			select {
			case l := <-r.lines:
				if l.msg == msg && (ok == nil || ok(l)) {
					return l, true
				}
				continue
			default:
			}
			return logLine{}, false
		case <-deadline.C:
			return logLine{}, false
		}
	}
}

func (r *runner) mustAwait(msg string, timeout time.Duration) logLine {
	r.t.Helper()
	l, ok := r.await(msg, timeout, nil)
	if !ok {
		r.t.Fatalf("%s: no %q line within %s; its log ends:\n%s", r.name, msg, timeout, r.tail())
	}
	return l
}

// awaitN collects n lines with message msg for which ok holds, until
// deadline; it returns what it got.
func (r *runner) awaitN(msg string, n int, deadline time.Time, ok func(logLine) bool) []logLine {
	var got []logLine
	for len(got) < n {
		l, found := r.await(msg, time.Until(deadline), ok)
		if !found {
			break
		}
		got = append(got, l)
	}
	return got
}

func (r *runner) tail() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.log.Bytes()
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return string(b)
}

// stop ends the process with SIGTERM, or SIGKILL after 10 s.
func (r *runner) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// kill ends the process with SIGKILL.
func (r *runner) kill() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

// awaitJobsStarted waits until n jobs have read their ledger and wait for
// their first slot: the leader creates a job's metric series then
// (jobs.Metrics.JobStarted). Nothing is logged at that moment, so it polls
// /metrics.
func (r *runner) awaitJobsStarted(n int, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	last := -1
	for {
		got, err := r.startedJobs()
		if err == nil && got >= n {
			return
		}
		if err == nil {
			last = got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: %d of %d jobs started within %s (%v); its log ends:\n%s", r.name, last, n, timeout, err, r.tail())
		}
		time.Sleep(100 * time.Millisecond) // polling /metrics: nothing to await
	}
}

func (r *runner) startedJobs() (int, error) {
	resp, err := http.Get("http://" + r.addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "leasecron_caught_up_slots_total{") {
			n++
		}
	}
	return n, sc.Err()
}

// proc is the runner as a proc, for status and cpuTime.
func (r *runner) proc() *proc { return &proc{name: r.name, cmd: r.cmd} }

// jobDoc is one ScheduledJob document of a jobs file.
func jobDoc(name, schedule, kind string) string {
	return fmt.Sprintf("---\napiVersion: leasecron.io/v1alpha1\nkind: ScheduledJob\nmetadata: {name: %s}\nspec:\n  schedule: %s\n  %s\n",
		name, quote(schedule), kind)
}

func sqlKind(stmts ...string) string {
	q := make([]string, len(stmts))
	for i, s := range stmts {
		q[i] = quote(s)
	}
	return "sql: {statements: [" + strings.Join(q, ", ") + "]}"
}

func httpKind(url, body string) string {
	return "http: {url: " + quote(url) + ", body: " + quote(body) + "}"
}

// quote writes s as a YAML double-quoted scalar (a JSON string is one).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// writeJobs replaces the jobs file at path in one rename, so that the
// leader's watcher never reads half of it.
func writeJobs(t *testing.T, path string, docs []string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(docs, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// jobName is the name of the i-th job of a set (from 1).
func jobName(i int) string { return fmt.Sprintf("j%04d", i) }

// insertHit is the statement the sql jobs run.
const insertHit = "INSERT INTO bench_hits (job, slot) VALUES (@job, @slot)"

// once is a cron expression (seconds first) whose only slot in the coming
// year is at, in UTC.
func once(at time.Time) string {
	at = at.UTC()
	return fmt.Sprintf("%d %d %d %d %d *", at.Second(), at.Minute(), at.Hour(), at.Day(), int(at.Month()))
}

// never is a cron expression that has no slot within days of now, nor in
// the catch-up window before it: 03:00 on a day half a year away.
func never() string {
	d := time.Now().UTC().AddDate(0, 6, 0)
	return fmt.Sprintf("0 0 3 %d %d *", min(d.Day(), 28), int(d.Month()))
}

// openDB opens the harness's own connection to dsn.
func openDB(t *testing.T, raw string) *gorm.DB {
	t.Helper()
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.Open(context.Background(), dsn, 30*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(db) })
	return db
}

// createHits creates bench_hits, where every sql job inserts one row per
// slot; at is the server's own time of the insert.
func createHits(t *testing.T, db *gorm.DB) {
	t.Helper()
	ddl := map[string]string{
		model.SQLite: "CREATE TABLE bench_hits (id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, slot TIMESTAMP NOT NULL, " +
			"at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))",
		model.MySQL: "CREATE TABLE bench_hits (id BIGINT AUTO_INCREMENT PRIMARY KEY, job VARCHAR(64) NOT NULL, slot DATETIME(6) NOT NULL, " +
			"at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
		model.Postgres: "CREATE TABLE bench_hits (id BIGSERIAL PRIMARY KEY, job TEXT NOT NULL, slot TIMESTAMPTZ NOT NULL, " +
			"at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
	}[db.Dialector.Name()]
	if err := db.Exec(ddl).Error; err != nil {
		t.Fatal(err)
	}
}

// lastHit returns how many rows bench_hits has for slot and when the last
// of them was inserted, by the server's clock.
func lastHit(t *testing.T, db *gorm.DB, slot time.Time) (int, time.Time) {
	t.Helper()
	var row struct {
		N    int
		Last string
	}
	q := map[string]string{
		model.SQLite:   "SELECT COUNT(*) AS n, COALESCE(MAX(at), '') AS last FROM bench_hits WHERE slot = ?",
		model.MySQL:    "SELECT COUNT(*) AS n, COALESCE(CAST(UNIX_TIMESTAMP(MAX(at)) AS CHAR), '') AS last FROM bench_hits WHERE slot = ?",
		model.Postgres: "SELECT COUNT(*) AS n, COALESCE(extract(epoch FROM MAX(at))::text, '') AS last FROM bench_hits WHERE slot = ?",
	}[db.Dialector.Name()]
	if err := db.Raw(q, slot.UTC()).Scan(&row).Error; err != nil {
		t.Fatal(err)
	}
	return row.N, parseDBTime(t, row.Last)
}

// parseDBTime reads an epoch in seconds ("1764547200.123456") or SQLite's
// "YYYY-MM-DD HH:MM:SS.SSS" (UTC).
func parseDBTime(t *testing.T, s string) time.Time {
	t.Helper()
	if s == "" {
		return time.Time{}
	}
	if at, err := time.Parse("2006-01-02 15:04:05.000", s); err == nil {
		return at
	}
	sec, frac, _ := strings.Cut(s, ".")
	whole, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		t.Fatalf("time %q from the database: %v", s, err)
	}
	ns := int64(0)
	if frac != "" {
		frac = (frac + "000000000")[:9]
		if ns, err = strconv.ParseInt(frac, 10, 64); err != nil {
			t.Fatalf("time %q from the database: %v", s, err)
		}
	}
	return time.Unix(whole, ns)
}

// ledgerRows reads the job_runs rows of the slots in [from, to): of every
// job, or of job only if it is not empty.
func ledgerRows(t *testing.T, db *gorm.DB, job string, from, to time.Time) []jobs.JobRun {
	t.Helper()
	var runs []jobs.JobRun
	q := db.Where("slot >= ? AND slot < ?", from.UTC(), to.UTC())
	if job != "" {
		q = q.Where("job = ?", job)
	}
	if err := q.Order("slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	return runs
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	c := slices.Clone(ds)
	slices.Sort(c)
	i := int(math.Ceil(p/100*float64(len(c)))) - 1
	return c[max(0, min(i, len(c)-1))]
}

// countCell formats counts as the series cells do: median (min – max).
func countCell(ns []int) string {
	if len(ns) == 0 {
		return "—"
	}
	c := slices.Clone(ns)
	slices.Sort(c)
	med := float64(c[len(c)/2])
	if len(c)%2 == 0 {
		med = float64(c[len(c)/2-1]+c[len(c)/2]) / 2
	}
	return fmt.Sprintf("%g (%d – %d)", med, c[0], c[len(c)-1])
}

// parallel runs fns as subtests of t at the same time and returns when all
// are done. (t.Run called from several goroutines, not t.Parallel, whose
// -parallel limit is the number of cores: two here.)
func parallel(t *testing.T, fns map[string]func(t *testing.T)) {
	var wg sync.WaitGroup
	for _, name := range slices.Sorted(maps.Keys(fns)) {
		wg.Go(func() { t.Run(name, fns[name]) })
	}
	wg.Wait()
}
