//go:build bench

package bench

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// burstJobs is how many sql jobs share one second in the burst sections.
const burstJobs = 1000

// burstWait is how long after its slot a burst may take to commit; a burst
// still running then is not waited for (and the trials of its database end).
const burstWait = 2 * time.Minute

// count writes n with a thousands separator, as the section titles do.
func count(n int) string {
	if n < 1000 {
		return fmt.Sprint(n)
	}
	return fmt.Sprintf("%s,%03d", count(n/1000), n%1000)
}

// burstResult is what the trials of one burst measured.
type burstResult struct {
	label                    string
	commit, insert, p50, p99 series
	retried, failed          []int  // per trial: attempts beyond the first; runs that failed
	conns                    []int  // per trial: connections the server accepted
	counted                  bool   // conns is known
	errs                     string // the errors of the retried attempts, counted
}

func (b burstResult) connsCell() string {
	if !b.counted {
		return "— (in process)"
	}
	return countCell(b.conns)
}

// connections is how many connections the server has accepted so far
// (MariaDB: Connections; PostgreSQL: pg_stat_database.sessions, which counts
// a session when it ends); SQLite has none.
func connections(t *testing.T, db *gorm.DB) (int64, bool) {
	t.Helper()
	var n int64
	switch db.Dialector.Name() {
	case model.MySQL:
		var row struct {
			VariableName string
			Value        int64
		}
		if err := db.Raw("SHOW GLOBAL STATUS LIKE 'Connections'").Scan(&row).Error; err != nil {
			t.Fatal(err)
		}
		n = row.Value
	case model.Postgres:
		if err := db.Raw("SELECT COALESCE(SUM(sessions), 0) + (SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend') FROM pg_stat_database").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
	default:
		return 0, false
	}
	return n, true
}

// benchBurst: 1,000 sql jobs due in the same second, on each database;
// then pg_cron with the same 1,000 statements on the same PostgreSQL.
func benchBurst(t *testing.T, r *report) {
	trials := max(3, *trialsFlag/2)
	var results []burstResult
	for _, d := range []string{"sqlite", "mysql"} {
		res := burstTrials(t, testenv.DSN(t, d), trials)
		res.label = d
		results = append(results, res)
	}
	// PostgreSQL: the server pg_cron runs in, so that both schedulers meet
	// the same server with the same settings.
	haveCron, cronErr := testenv.PostgresHasLibrary("pg_cron")
	var cronServer *testenv.Server
	pgLabel, pgDSN := "postgres", ""
	if haveCron {
		cronServer = testenv.StartPostgres(t, pgCronSettings)
		pgDSN = cronServer.DSN(t)
		pgLabel = "postgres (pg_cron loaded, idle in another database)"
	} else {
		pgDSN = testenv.DSN(t, "postgres")
	}
	pg := burstTrials(t, pgDSN, trials)
	pg.label = pgLabel
	results = append(results, pg)

	var rows [][]string
	var errs []string
	for _, res := range results {
		rows = append(rows, []string{res.label, res.commit.cell(), res.insert.cell(), res.p50.cell(), res.p99.cell(), countCell(res.retried), res.connsCell()})
		if res.errs != "" {
			errs = append(errs, strings.Fields(res.label)[0]+": "+res.errs)
		}
	}
	retries := "No attempt was retried in this run."
	if len(errs) > 0 {
		retries = "The retried attempts of this run failed with " + strings.Join(errs, "; ") + "."
	}
	r.add("1,000 sql jobs due in the same second",
		fmt.Sprintf("One `leasecron run` (filelock, JSON logs at info) with %s `sql` jobs, each `%s`, on each database: "+
			"the harness's throwaway servers on loopback with their defaults (MariaDB max_connections 151; PostgreSQL max_connections 100, "+
			"the server of the pg_cron section below, where pg_cron idles in another database). The jobs are loaded on a schedule that "+
			"does not fire; each trial then moves all of them to one second 3–4 s ahead by rewriting the jobs file, which the running "+
			"leader applies (the trial waits for every job's `job changed` line before that second). "+
			"All committed: from the slot's time to the last of the %s `slot succeeded` lines, which are logged once the commit has returned. "+
			"Last row inserted: the server's `bench_hits.at` of the last row (CURRENT_TIMESTAMP(6), clock_timestamp(), SQLite's 'now'). "+
			"Start lag: `job_runs.started_at` (when the slot's first attempt began: its one transaction runs the INSERT, checks the term and inserts the "+
			"succeeded row; a retried slot shows its last attempt) minus the slot's time, per job, the "+
			"50th and 99th percentile of the %s. Attempts beyond the first: the leader's `slot attempt failed, retrying` lines (an attempt "+
			"fails, for one, when the server refuses a connection; it is tried again after the 1 s initial backoff). Connections opened: "+
			"new sessions on the server during the trial (MariaDB's `Connections`, PostgreSQL's `pg_stat_database.sessions`); "+
			"leasecron's jobs share a pool of 10 connections (--database-max-connections, kept open while idle up to a minute), "+
			"the leader's term and database watch a pool of 2. %d trials per database; a trial whose slots have not all committed within %s counts as "+
			"never (and ends its database's trials). %s "+
			"Target: all committed within 1 s on MariaDB and PostgreSQL.", count(burstJobs), insertHit, count(burstJobs), count(burstJobs), trials, burstWait, retries),
		[]string{"database", "all committed", "last row inserted", "start lag p50", "start lag p99", "attempts beyond the first", "connections opened"}, rows)

	if !haveCron {
		t.Errorf("pg_cron section not measured: %v", cronErr)
		r.add("pg_cron side by side (1,000 jobs due at once)",
			"Not measured: "+cronErr.Error()+". Run hack/install-test-deps.sh (it installs Debian's postgresql-15-cron) and `make bench` again.",
			[]string{"scheduler", "result"}, [][]string{{"pg_cron", "not installed"}})
		return
	}
	benchPgCron(t, r, cronServer, pg)
}

// burstTrials runs trials bursts of burstJobs jobs in one leader on dsn.
func burstTrials(t *testing.T, dsn string, trials int) burstResult {
	db := openDB(t, dsn)
	createHits(t, db)
	file := filepath.Join(t.TempDir(), "jobs.yaml")
	docs := func(schedule string) []string {
		out := make([]string, burstJobs)
		for i := range out {
			out[i] = jobDoc(jobName(i+1), schedule, sqlKind(insertHit))
		}
		return out
	}
	writeJobs(t, file, docs(never()))
	lc := startRunner(t, "burst", dsn, file)
	lc.awaitJobsStarted(burstJobs, 2*time.Minute)

	var res burstResult
	for i := 0; i < trials; i++ {
		slot := time.Now().Truncate(time.Second).Add(4 * time.Second)
		conns0, _ := connections(t, db)
		cpu0 := cpuTime(t, lc.proc())
		failed0 := lc.count("slot attempt failed, retrying")
		writeJobs(t, file, docs(once(slot)))
		changed := lc.awaitN("job changed", burstJobs, slot.Add(-100*time.Millisecond), nil)
		if len(changed) < burstJobs {
			t.Fatalf("only %d of %d jobs took the new schedule before its slot %s; the leader's log ends:\n%s", len(changed), burstJobs, slot.Format(time.RFC3339), lc.tail())
		}
		t.Logf("burst at %s: every job took the new schedule %s before the slot", slot.UTC().Format(time.RFC3339), round(slot.Sub(changed[len(changed)-1].at)))
		key := slot.UTC().Format(time.RFC3339)
		done := lc.awaitN("slot succeeded", burstJobs, slot.Add(burstWait), func(l logLine) bool { return l.str("slot") == key })
		conns1, counted := connections(t, db)
		res.conns = append(res.conns, int(conns1-conns0))
		res.counted = counted
		cpu := cpuTime(t, lc.proc()) - cpu0
		retried := lc.count("slot attempt failed, retrying") - failed0
		runs := ledgerRows(t, db, "", slot, slot.Add(time.Second))
		failed := 0
		var lags []time.Duration
		for _, run := range runs {
			if run.Status != jobs.StatusSucceeded {
				failed++
			}
			if run.StartedAt != nil {
				lags = append(lags, run.StartedAt.Sub(slot))
			}
		}
		res.retried, res.failed = append(res.retried, retried), append(res.failed, failed+burstJobs-len(runs))
		res.p50.add(percentile(lags, 50), len(lags) > 0)
		res.p99.add(percentile(lags, 99), len(lags) > 0)
		if len(done) < burstJobs {
			t.Logf("burst at %s: %d of %d slots succeeded within %s; the leader's log ends:\n%s", key, len(done), burstJobs, burstWait, lc.tail())
			res.commit.add(0, false)
			res.insert.add(0, false)
			break // its slots still running would not take the next trial's schedule
		}
		var last time.Time
		for _, l := range done {
			if l.at.After(last) {
				last = l.at
			}
		}
		res.commit.add(last.Sub(slot), true)
		n, hit := lastHit(t, db, slot)
		if n != burstJobs {
			t.Fatalf("burst at %s: bench_hits has %d rows, want %d", key, n, burstJobs)
		}
		res.insert.add(hit.Sub(slot), true)
		t.Logf("burst at %s: all committed after %s, last insert %s, start lag p50 %s p99 %s, %d retried attempts, %d connections opened, leader CPU %s",
			key, round(last.Sub(slot)), round(hit.Sub(slot)), round(percentile(lags, 50)), round(percentile(lags, 99)), retried, conns1-conns0, cpu)
		if retried > 0 {
			t.Logf("burst at %s: retried attempts so far: %s", key, lc.retryErrors())
		}
	}
	res.errs = lc.retryErrors()
	lc.stop()
	return res
}

// benchBeside: a per-second sql job's start lag while a 60 s job runs
// beside it, and the idle leader's footprint with 1,000 jobs loaded, all at
// once (each in its own processes).
func benchBeside(t *testing.T, r *report) {
	var (
		mu     sync.Mutex
		beside = map[string][]string{}
		idle   [][]string
	)
	// The idle leaders start first: starting 1,000 jobs is work (and a
	// storm of connections on the shared PostgreSQL) that the per-second
	// job must not meet; idle, they cost the others nothing.
	leaders := startIdle(t)
	parallel(t, map[string]func(*testing.T){
		"beside-mysql":    func(t *testing.T) { row := besideRow(t, "mysql"); mu.Lock(); beside["mysql"] = row; mu.Unlock() },
		"beside-postgres": func(t *testing.T) { row := besideRow(t, "postgres"); mu.Lock(); beside["postgres"] = row; mu.Unlock() },
		"idle":            func(t *testing.T) { rows := idleRows(t, leaders); mu.Lock(); idle = rows; mu.Unlock() },
	})
	var rows [][]string
	for _, d := range []string{"mysql", "postgres"} {
		if row, ok := beside[d]; ok {
			rows = append(rows, row)
		}
	}
	r.add("A per-second job beside a 60 s job",
		fmt.Sprintf("One `leasecron run` per database with two `sql` jobs: `sleeper` on `0 * * * * *` runs `SELECT pg_sleep(60)` "+
			"(MariaDB: `SELECT SLEEP(60)`), so one 60 s transaction is always open (a job never overlaps itself: each next slot starts "+
			"when the last ends), and `tick` on `* * * * * *` runs `%s`. Measured over %d consecutive `tick` slots from 3 s after the "+
			"leader began (its first, caught-up slot left out); the two databases ran at the same time, in their own processes, beside "+
			"the idle leaders of the next section (started, and done starting, before these). Start lag: `job_runs.started_at` (the start of the first attempt) minus the slot's time: median (range) of the slots, and "+
			"the 99th percentile. Committed: the `slot succeeded` line minus the slot's time. Target: start lag p99 under 100 ms.",
			insertHit, besideSlots),
		[]string{"database", "start lag", "start lag p99", "committed p99", "slots with the 60 s job running"}, rows)
	r.add("Idle leader with 1,000 jobs loaded",
		fmt.Sprintf("Four leaders side by side (filelock, JSON logs at info), on an SQLite file and on the shared PostgreSQL: with %s `sql` "+
			"jobs from a jobs file, on `%s` (no slot during the measurement, nor in the catch-up window), and with only the built-in "+
			"daily-stats job (no jobs file). "+
			"Measured as the Steady state section measures: after every job has read its ledger and a %s warm-up, over %s: resident memory "+
			"at the end (VmRSS, and of it the process's own anonymous memory), the peak (VmHWM, which includes the start: migrating, "+
			"loading and starting the jobs), and CPU time over the window (the jobs file is polled every second). "+
			"Target: under 64 MiB with 1,000 jobs.", count(burstJobs), never(), idleWarmUp, idleWindow),
		[]string{"leader", "RSS", "peak RSS", "CPU"}, idle)
}

// besideSlots is how many per-second slots benchBeside measures.
const besideSlots = 60

func besideRow(t *testing.T, dialect string) []string {
	dsn := testenv.DSN(t, dialect)
	db := openDB(t, dsn)
	createHits(t, db)
	sleep := map[string]string{"postgres": "SELECT pg_sleep(60)", "mysql": "SELECT SLEEP(60)"}[dialect]
	file := filepath.Join(t.TempDir(), "jobs.yaml")
	writeJobs(t, file, []string{
		jobDoc("sleeper", "0 * * * * *", sqlKind(sleep)),
		jobDoc("tick", "* * * * * *", sqlKind(insertHit)),
	})
	lc := startRunner(t, "beside-"+dialect, dsn, file)
	from := lc.led.Truncate(time.Second).Add(3 * time.Second)
	to := from.Add(besideSlots * time.Second)
	done := lc.awaitN("slot succeeded", besideSlots, to.Add(30*time.Second), func(l logLine) bool {
		slot, err := time.Parse(time.RFC3339, l.str("slot"))
		return l.str("job") == "tick" && err == nil && !slot.Before(from) && slot.Before(to)
	})
	if len(done) < besideSlots {
		t.Fatalf("%s: %d of %d tick slots succeeded; the leader's log ends:\n%s", dialect, len(done), besideSlots, lc.tail())
	}
	var committed []time.Duration
	for _, l := range done {
		slot, _ := time.Parse(time.RFC3339, l.str("slot"))
		committed = append(committed, l.at.Sub(slot))
	}
	ticks := ledgerRows(t, db, "tick", from, to)
	sleepers := ledgerRows(t, db, "sleeper", from.Add(-3*time.Minute), to)
	var lag series
	covered := 0
	for _, run := range ticks {
		if run.StartedAt == nil {
			continue
		}
		lag.add(run.StartedAt.Sub(run.Slot), true)
		for _, s := range sleepers {
			if s.StartedAt != nil && !s.StartedAt.After(*run.StartedAt) && (s.FinishedAt == nil || s.FinishedAt.After(*run.StartedAt)) {
				covered++
				break
			}
		}
	}
	lc.kill() // not stop: the shutdown would wait for the 60 s job
	return []string{dialect, lag.cell(), round(percentile(lag.samples, 99)), round(percentile(committed, 99)),
		fmt.Sprintf("%d of %d", covered, len(ticks))}
}

const (
	idleWarmUp = 5 * time.Second
	idleWindow = 30 * time.Second
)

// idleLeader is one leader of the idle section.
type idleLeader struct {
	label string
	r     *runner
}

// startIdle starts the idle section's leaders and waits until each has
// started all its jobs.
func startIdle(t *testing.T) []idleLeader {
	dir := t.TempDir()
	file := filepath.Join(dir, "jobs.yaml")
	var docs []string
	for i := 1; i <= burstJobs; i++ {
		docs = append(docs, jobDoc(jobName(i), never(), sqlKind(insertHit)))
	}
	writeJobs(t, file, docs)
	setups := []struct {
		label, dsn, file string
		jobs             int
	}{
		{fmt.Sprintf("%s sql jobs, SQLite ledger", count(burstJobs)), "sqlite://" + filepath.Join(dir, "loaded.db"), file, burstJobs},
		{"the built-in daily-stats job only, SQLite ledger", "sqlite://" + filepath.Join(dir, "builtin.db"), "", 1},
		{fmt.Sprintf("%s sql jobs, PostgreSQL ledger", count(burstJobs)), testenv.DSN(t, "postgres"), file, burstJobs},
		{"the built-in daily-stats job only, PostgreSQL ledger", testenv.DSN(t, "postgres"), "", 1},
	}
	var out []idleLeader
	for i, s := range setups {
		out = append(out, idleLeader{s.label, startRunner(t, fmt.Sprintf("idle-%d", i), s.dsn, s.file)})
	}
	for i, s := range setups {
		out[i].r.awaitJobsStarted(s.jobs, 2*time.Minute)
	}
	return out
}

// idleRows measures the idle leaders.
func idleRows(t *testing.T, leaders []idleLeader) [][]string {
	time.Sleep(idleWarmUp) // the window measures the idle state, not the start
	from := time.Now()
	cpu0 := make([]time.Duration, len(leaders))
	for i, l := range leaders {
		cpu0[i] = cpuTime(t, l.r.proc())
	}
	time.Sleep(idleWindow) // the measurement window itself
	window := time.Since(from)
	var rows [][]string
	for i, l := range leaders {
		p := l.r.proc()
		cpu := cpuTime(t, p) - cpu0[i]
		rows = append(rows, []string{
			l.label,
			fmt.Sprintf("%.1f MiB (%.1f MiB anonymous)", mib(status(t, p, "VmRSS")), mib(status(t, p, "RssAnon"))),
			fmt.Sprintf("%.1f MiB", mib(status(t, p, "VmHWM"))),
			fmt.Sprintf("%s (%.2f%% of a core)", cpu.Round(time.Millisecond), 100*cpu.Seconds()/window.Seconds()),
		})
	}
	for _, l := range leaders {
		l.r.stop()
	}
	return rows
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// benchHTTPLag: how late after its slot's time an http job's request
// arrives, with 20 per-second jobs, on each ledger database in turn.
func benchHTTPLag(t *testing.T, r *report) {
	var (
		mu   sync.Mutex
		rows = map[string][]string{}
	)
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) { row := httpLagRow(t, d); mu.Lock(); rows[d] = row; mu.Unlock() })
	}
	var table [][]string
	for _, d := range testenv.Dialects() {
		if row, ok := rows[d]; ok {
			table = append(table, row)
		}
	}
	r.add("http jobs: delivery lag",
		fmt.Sprintf("%d `http` jobs on `* * * * * *` (body `{{.Key}}`) in one `leasecron run` per ledger database, one after the other, "+
			"each posting to a receiver of the harness's own on loopback (testenv.Receiver) that records each request's arrival. "+
			"Over the %d slots from 3 s after the leader began: lag is the arrival minus the slot's time, read from the `Idempotency-Key` "+
			"(`<job>@<slot>`), for the first delivery of each key; each slot is claimed in the ledger before its request and recorded "+
			"after the answer. Target: p99 under 100 ms.", httpJobs, httpSlots),
		[]string{"ledger database", "deliveries", "lag", "lag p99", "keys delivered twice"}, table)
}

const (
	httpJobs  = 20
	httpSlots = 30
)

func httpLagRow(t *testing.T, dialect string) []string {
	rc := testenv.NewReceiver(t, nil)
	file := filepath.Join(t.TempDir(), "jobs.yaml")
	var docs []string
	for i := 1; i <= httpJobs; i++ {
		name := fmt.Sprintf("h%02d", i)
		docs = append(docs, jobDoc(name, "* * * * * *", httpKind(rc.URL()+"/"+name, "{{.Key}}")))
	}
	writeJobs(t, file, docs)
	lc := startRunner(t, "http-"+dialect, testenv.DSN(t, dialect), file)
	from := lc.led.Truncate(time.Second).Add(3 * time.Second)
	to := from.Add(httpSlots * time.Second)
	want := httpJobs * httpSlots
	done := lc.awaitN("slot succeeded", want, to.Add(30*time.Second), func(l logLine) bool {
		slot, err := time.Parse(time.RFC3339, l.str("slot"))
		return err == nil && !slot.Before(from) && slot.Before(to)
	})
	lc.stop()
	if len(done) < want {
		t.Fatalf("%s: %d of %d slots succeeded; the leader's log ends:\n%s", dialect, len(done), want, lc.tail())
	}
	first := map[string]time.Time{}
	twice := 0
	for _, d := range rc.Deliveries() {
		key := d.Key()
		_, at, ok := strings.Cut(key, "@")
		slot, err := time.Parse(time.RFC3339, at)
		if !ok || err != nil {
			t.Fatalf("%s: delivery with Idempotency-Key %q", dialect, key)
		}
		if slot.Before(from) || !slot.Before(to) {
			continue
		}
		if d.Body != key {
			t.Fatalf("%s: body %q, want the key %q", dialect, d.Body, key)
		}
		if _, seen := first[key]; seen {
			twice++
			continue
		}
		first[key] = d.At
	}
	var lag series
	for key, at := range first {
		_, s, _ := strings.Cut(key, "@")
		slot, _ := time.Parse(time.RFC3339, s)
		lag.add(at.Sub(slot), true)
	}
	return []string{dialect, fmt.Sprintf("%d", len(first)), lag.cell(), round(percentile(lag.samples, 99)), fmt.Sprintf("%d", twice)}
}
