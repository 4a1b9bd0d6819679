//go:build bench

package bench

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
)

// pgCronDB is the database pg_cron's jobs run in (cron.database_name).
const pgCronDB = "pgcron_bench"

// pgCronSettings load pg_cron into a PostgreSQL server; every pg_cron
// setting else is its default.
var pgCronSettings = map[string]string{"shared_preload_libraries": "pg_cron", "cron.database_name": pgCronDB}

// benchPgCron schedules the burst's 1,000 statements with pg_cron on srv,
// the server of the burst's PostgreSQL row (lc).
func benchPgCron(t *testing.T, r *report, srv *testenv.Server, lc burstResult) {
	trials := max(2, *trialsFlag/3)
	cron, about := pgCronTrials(t, srv, trials)
	rows := [][]string{
		{"leasecron (the postgres row above: same server, one second)", lc.commit.cell(), lc.insert.cell(), lc.p50.cell(), lc.p99.cell(),
			countCell(lc.retried) + " retried, " + countCell(lc.failed) + " failed", lc.connsCell(), "—"},
		{fmt.Sprintf("pg_cron %s, defaults (cron.max_running_jobs %s)", about["version"], about["cron.max_running_jobs"]),
			cron.commit.cell(), cron.insert.cell(), cron.p50.cell(), cron.p99.cell(),
			"no retries, " + countCell(cron.failed) + " failed", cron.connsCell(), faster(lc.commit, cron.commit)},
	}
	r.add("pg_cron side by side (1,000 jobs due at once)",
		fmt.Sprintf("pg_cron %s (Debian's %s; extension version %s) in the PostgreSQL %s server of the postgres row above, started with "+
			"`shared_preload_libraries=pg_cron` and `cron.database_name=%s`; every other setting at its default (cron.max_running_jobs %s, "+
			"cron.use_background_workers %s: each run opens a libpq connection to the server; max_connections %s). The same %s statements, "+
			"scheduled with `cron.schedule(name, '* * * * *', 'INSERT INTO bench_hits (job, slot) VALUES (''<name>'', date_trunc(''minute'', now()))')` "+
			"(pg_cron's granularity is the minute), measured over %d consecutive minutes after they were scheduled. All committed: from the "+
			"minute's start to the last `cron.job_run_details.end_time` (recorded when the statement's result has come back). Last row "+
			"inserted and connections opened as above. Start lag: `cron.job_run_details.start_time` minus the minute's start. The minute "+
			"counts as never if not all %s runs had ended 55 s into it. Target: leasecron ahead of pg_cron.",
			about["version"], about["package"], about["extversion"], about["server_version"], pgCronDB, about["cron.max_running_jobs"],
			about["cron.use_background_workers"], about["max_connections"], count(burstJobs), trials, count(burstJobs)),
		[]string{"scheduler", "all committed", "last row inserted", "start lag p50", "start lag p99", "attempts", "connections opened", "leasecron is"}, rows)
}

// faster says how many times sooner (or later) a's median is than b's.
func faster(a, b series) string {
	switch {
	case len(a.samples) == 0:
		return "—"
	case len(b.samples) == 0:
		return "∞ (pg_cron never finished)"
	}
	if x := float64(b.median()) / float64(a.median()); x >= 1 {
		return fmt.Sprintf("%.1f× faster", x)
	}
	return fmt.Sprintf("%.1f× slower", float64(a.median())/float64(b.median()))
}

// pgCronTrials schedules burstJobs inserts in pg_cron, every minute, and
// measures trials consecutive minutes. about describes pg_cron and the
// settings it ran with.
func pgCronTrials(t *testing.T, srv *testenv.Server, trials int) (res burstResult, about map[string]string) {
	db := openDB(t, srv.NamedDSN(t, pgCronDB))
	if err := db.Exec("CREATE EXTENSION pg_cron").Error; err != nil {
		t.Fatalf("CREATE EXTENSION pg_cron in %s: %v", pgCronDB, err)
	}
	createHits(t, db)
	about = map[string]string{}
	for _, s := range []string{"cron.max_running_jobs", "cron.use_background_workers", "max_connections", "server_version"} {
		var v string
		if err := db.Raw("SELECT current_setting(?)", s).Scan(&v).Error; err != nil {
			t.Fatal(err)
		}
		about[s] = v
	}
	about["server_version"], _, _ = strings.Cut(about["server_version"], " ")
	var ext string
	if err := db.Raw("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").Scan(&ext).Error; err != nil {
		t.Fatal(err)
	}
	about["extversion"] = ext
	major, _, _ := strings.Cut(about["server_version"], ".")
	about["package"] = "postgresql-" + major + "-cron"
	about["version"] = ext
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", about["package"]).Output(); err == nil && len(out) > 0 {
		about["package"] += " " + string(out)
		about["version"], _, _ = strings.Cut(string(out), "-")
	}

	schedule := "SELECT cron.schedule(name, '* * * * *', " +
		"format('INSERT INTO bench_hits (job, slot) VALUES (%L, date_trunc(''minute'', now()))', name)) " +
		"FROM (SELECT 'j' || lpad(g::text, 4, '0') AS name FROM generate_series(1, ?) g) AS jobs"
	if err := db.Exec(schedule, burstJobs).Error; err != nil {
		t.Fatalf("cron.schedule: %v", err)
	}
	first := time.Now().Add(5 * time.Second).Truncate(time.Minute).Add(time.Minute)
	for k := 0; k < trials; k++ {
		minute := first.Add(time.Duration(k) * time.Minute)
		time.Sleep(time.Until(minute)) // pg_cron's slot is the wall clock's minute
		conns0, _ := connections(t, db)
		runs, complete := awaitCronRuns(t, db, minute)
		conns1, _ := connections(t, db)
		res.conns, res.counted = append(res.conns, int(conns1-conns0)), true
		var lags []time.Duration
		var last time.Time
		failed := burstJobs - len(runs)
		for _, run := range runs {
			lags = append(lags, run.StartTime.Sub(minute))
			if run.Status != "succeeded" {
				failed++
			}
			if run.EndTime != nil && run.EndTime.After(last) {
				last = *run.EndTime
			}
		}
		res.failed = append(res.failed, failed)
		res.p50.add(percentile(lags, 50), len(lags) > 0)
		res.p99.add(percentile(lags, 99), len(lags) > 0)
		n, hit := lastHit(t, db, minute)
		if !complete || n != burstJobs {
			t.Logf("pg_cron, minute %s: %d runs ended within 55 s, %d rows inserted", minute.Format(time.RFC3339), len(runs), n)
			res.commit.add(0, false)
			res.insert.add(0, false)
			continue
		}
		res.commit.add(last.Sub(minute), true)
		res.insert.add(hit.Sub(minute), true)
		t.Logf("pg_cron, minute %s: all ended after %s, last insert %s, start lag p50 %s p99 %s, %d failed",
			minute.Format(time.RFC3339), round(last.Sub(minute)), round(hit.Sub(minute)), round(percentile(lags, 50)), round(percentile(lags, 99)), failed)
	}
	if err := db.Exec("SELECT cron.unschedule(jobid) FROM cron.job").Error; err != nil {
		t.Fatalf("cron.unschedule: %v", err)
	}
	return res, about
}

// cronRun is one row of cron.job_run_details.
type cronRun struct {
	Status    string
	StartTime time.Time
	EndTime   *time.Time
}

// awaitCronRuns waits until burstJobs runs that started in the minute have
// ended, or 55 s into it, and returns the runs that ended.
func awaitCronRuns(t *testing.T, db *gorm.DB, minute time.Time) ([]cronRun, bool) {
	t.Helper()
	deadline := minute.Add(55 * time.Second)
	where := " FROM cron.job_run_details WHERE start_time >= ? AND start_time < ? AND status IN ('succeeded', 'failed')"
	for {
		var n int
		if err := db.Raw("SELECT COUNT(*)"+where, minute, minute.Add(time.Minute)).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n >= burstJobs || time.Now().After(deadline) {
			var runs []cronRun
			if err := db.Raw("SELECT status, start_time, end_time"+where, minute, minute.Add(time.Minute)).Scan(&runs).Error; err != nil {
				t.Fatal(err)
			}
			return runs, len(runs) >= burstJobs
		}
		time.Sleep(100 * time.Millisecond) // polling pg_cron's own record: it tells no one
	}
}
