//go:build bench

package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// cutOffWait is how long a new leader's steps are waited for after the old
// leader is cut off; a step still blocked then is reported as not done.
const cutOffWait = 20 * time.Second

// cutOffIdle is the idle-in-transaction limit of the "now" setup (the
// controller uses --lease-duration, 15 s by default).
const cutOffIdle = 2 * time.Second

// benchCutOff: a leader is cut off from its database (a proxy stops
// forwarding, the connection stays open) in the middle of a job's
// transaction; how long until the next leader has begun its term, run
// another job's slot, and run the cut-off job's slot.
func benchCutOff(t *testing.T, r *report) {
	setups := []struct {
		label     string
		oldLedger bool // lock the term row FOR UPDATE for the whole transaction, as before
		limits    model.SessionLimits
	}{
		{"before: term row locked FOR UPDATE for the whole job transaction, no session limits", true, model.SessionLimits{}},
		{"shared lock only around the commit, no session limits", false, model.SessionLimits{}},
		{fmt.Sprintf("leasecron now: shared lock around the commit, idle-in-transaction limit %s", cutOffIdle), false,
			model.SessionLimits{IdleInTransaction: cutOffIdle, Statement: time.Minute}},
	}
	var rows [][]string
	for _, d := range []string{"mysql", "postgres"} {
		for _, s := range setups {
			trials := 1
			if !s.limits.IsZero() {
				trials = max(3, *trialsFlag/2)
			}
			var term, other, same series
			for i := 0; i < trials; i++ {
				a, b, c := cutOffTrial(t, d, s.oldLedger, s.limits)
				term.samples, other.samples, same.samples = append(term.samples, a...), append(other.samples, b...), append(same.samples, c...)
				if len(a) == 0 {
					term.never++
				}
				if len(b) == 0 {
					other.never++
				}
				if len(c) == 0 {
					same.never++
				}
			}
			rows = append(rows, []string{d, s.label, cutOffCell(term), cutOffCell(other), cutOffCell(same)})
		}
	}
	r.add("Leader cut off in the middle of a transaction",
		"The leader's connection goes through a TCP proxy that, in the middle of a job's transaction (after the job's "+
			"own UPDATE, before the commit), stops forwarding in both directions and closes nothing, as a partition does: "+
			"the server keeps an idle session holding that transaction's locks. A new leader on a direct connection then "+
			"begins its term, runs another job's slot and runs the cut-off job's slot (each an `UPDATE counters SET n = n + 1`); "+
			"each time is from the cut. The first row does what leasecron did before: every job transaction locked the term "+
			"row `FOR UPDATE` as its first statement. A step still blocked after "+cutOffWait.String()+" is shown as not done "+
			"(left alone, PostgreSQL keeps such a session until TCP keepalive, about 2 h; MariaDB until `wait_timeout`, 8 h). "+
			"Target: the new leader runs the cut-off job's slot within the idle limit + 1 s.",
		[]string{"database", "setup", "new term begun", "another job's slot", "the cut-off job's slot"}, rows)
}

func cutOffCell(s series) string {
	if len(s.samples) == 0 {
		return fmt.Sprintf("not within %s", cutOffWait)
	}
	return s.cell()
}

// cutOffTrial runs one cut and returns, for each of the new leader's three
// steps, its time from the cut (empty if it did not finish within cutOffWait).
func cutOffTrial(t *testing.T, dialect string, oldLedger bool, limits model.SessionLimits) (term, other, same []time.Duration) {
	ctx := context.Background()
	direct := testenv.DSN(t, dialect)
	db := openMigrated(t, direct)
	if err := db.Exec("CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO counters (name, n) VALUES ('same', 0), ('other', 0)").Error; err != nil {
		t.Fatal(err)
	}
	increment := func(tx *gorm.DB, name string) error {
		return tx.Exec("UPDATE counters SET n = n + 1 WHERE name = ?", name).Error
	}

	proxy, through := testenv.ProxyDSN(t, direct)
	defer proxy.Close() // ends the cut-off session on the server, too
	cdsn, err := model.ParseDSN(through)
	if err != nil {
		t.Fatal(err)
	}
	cut, err := model.OpenWith(ctx, cdsn, model.OpenOptions{Wait: 30 * time.Second, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close(cut)

	slot := time.Date(2026, 12, 1, 5, 0, 0, 0, time.UTC)
	old, next := jobs.NewLedger(cut, "old"), jobs.NewLedger(db, "next")
	fence, err := old.BeginTerm(ctx, "bench")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Claim(ctx, fence, "same", slot); err != nil {
		t.Fatal(err)
	}
	oldCtx, cancelOld := context.WithCancel(ctx)
	defer cancelOld()
	holed := make(chan time.Time, 1)
	go func() {
		_ = old.Complete(oldCtx, fence, "same", slot, func(tx *gorm.DB) error {
			if oldLedger {
				lock := "SELECT term FROM leader_terms WHERE scope = 'bench' FOR UPDATE"
				if err := tx.Exec(lock).Error; err != nil {
					return err
				}
			}
			if err := increment(tx, "same"); err != nil {
				return err
			}
			proxy.BlackHole()
			holed <- time.Now()
			return nil
		})
	}()
	start := <-holed

	wctx, cancel := context.WithTimeout(ctx, cutOffWait)
	defer cancel()
	f, err := next.BeginTerm(wctx, "bench")
	if err != nil {
		return nil, nil, nil
	}
	term = []time.Duration{time.Since(start)}
	run := func(job string) []time.Duration {
		if done, err := next.Claim(wctx, f, job, slot); err != nil || done {
			return nil
		}
		if err := next.Complete(wctx, f, job, slot, func(tx *gorm.DB) error { return increment(tx, job) }); err != nil {
			return nil
		}
		return []time.Duration{time.Since(start)}
	}
	other = run("other")
	same = run("same")
	if same != nil {
		var n int
		if err := db.Raw("SELECT n FROM counters WHERE name = 'same'").Scan(&n).Error; err != nil || n != 1 {
			t.Fatalf("%s: the cut-off job's counter is %d (%v), want 1", dialect, n, err)
		}
	}
	return term, other, same
}
