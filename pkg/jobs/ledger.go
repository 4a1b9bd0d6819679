package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/leasecron/leasecron/pkg/model"
)

// ErrFenced means the database has issued a newer leadership term than the
// one this process holds: another process leads now, and this one must stop.
var ErrFenced = errors.New("a newer leadership term exists in the database: this process no longer leads")

// ErrSlotBusy means another process is running the slot right now.
var ErrSlotBusy = errors.New("slot is being run by another process")

// Fence is a leadership term issued by the database. The zero Fence is the
// manual fence of `once` and `backfill`: it skips the term check and relies
// on the ledger's unique key and the job's own keys.
type Fence struct {
	Scope string
	Term  int64
}

// Manual reports whether f is the manual fence.
func (f Fence) Manual() bool { return f.Term == 0 }

// Ledger records every slot of every job in job_runs and makes the database
// the referee between leaders.
//
// Locks are held briefly, so jobs run side by side and a new leader is never
// kept waiting by an old one's work:
//
//   - BeginTerm is the only writer of the scope's leader_terms row: a short
//     transaction that increments the term under the row's exclusive lock.
//   - A claim is a short transaction: it reads the term under a shared lock
//     (PostgreSQL FOR SHARE, MariaDB/MySQL LOCK IN SHARE MODE), then inserts
//     or takes over the slot's running row, and commits.
//   - A job transaction runs the job's statements first and reads the term
//     under the shared lock only at the end, just before it marks the slot
//     succeeded and commits. The shared lock is held from that check to the
//     commit, so a new term cannot slip between them: BeginTerm waits for
//     that commit, and a transaction that checks after a new term began
//     sees it and rolls back with ErrFenced.
//
// SQLite has one writer at a time: there every write transaction, a job's
// included, holds the database's write lock to its end, and others queue on
// the busy timeout. Server-side session limits (model.SessionLimits) keep a
// leader that died in the middle of a transaction from holding its locks for
// longer than the idle limit.
type Ledger struct {
	db     *gorm.DB
	holder string
	now    func() time.Time
}

// NewLedger returns a ledger writing as holder.
func NewLedger(db *gorm.DB, holder string) *Ledger {
	return &Ledger{db: db, holder: holder, now: time.Now}
}

// BeginTerm starts a new leadership term for scope and returns it as this
// process's fence. Every claim made under an older term fails from now on.
func (l *Ledger) BeginTerm(ctx context.Context, scope string) (Fence, error) {
	var term int64
	err := l.short(ctx, func(tx *gorm.DB) error {
		row := LeaderTerm{Scope: scope}
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
			return fmt.Errorf("create term row: %w", err)
		}
		now := l.now().UTC()
		res := tx.Model(&LeaderTerm{}).Where("scope = ?", scope).
			Updates(map[string]any{"term": gorm.Expr("term + 1"), "holder": l.holder, "started_at": now})
		if res.Error != nil {
			return fmt.Errorf("advance term: %w", res.Error)
		}
		return tx.Model(&LeaderTerm{}).Where("scope = ?", scope).Pluck("term", &term).Error
	})
	if err != nil {
		return Fence{}, fmt.Errorf("begin leadership term for %s: %w", scope, err)
	}
	return Fence{Scope: scope, Term: term}, nil
}

// checkTerm reads the scope's term inside tx under a shared lock, held to
// the end of tx, and fails with ErrFenced if the term moved on. Shared locks
// do not exclude each other, so any number of claims and job transactions
// check at once; only BeginTerm's exclusive lock waits for them (and they
// for it).
func checkTerm(tx *gorm.DB, f Fence) error {
	if f.Manual() {
		return nil
	}
	q := "SELECT term, holder FROM leader_terms WHERE scope = ?"
	switch tx.Dialector.Name() {
	case model.Postgres:
		q += " FOR SHARE"
	case model.MySQL:
		q += " LOCK IN SHARE MODE" // MariaDB has no FOR SHARE; MySQL 8 takes both
	} // SQLite: the transaction already holds the database's write lock
	var t LeaderTerm
	res := tx.Raw(q, f.Scope).Scan(&t)
	if res.Error != nil {
		return fmt.Errorf("read leadership term: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w (ours %d, the database has no term for %s)", ErrFenced, f.Term, f.Scope)
	}
	if t.Term != f.Term {
		return fmt.Errorf("%w (ours %d, database %d held by %s)", ErrFenced, f.Term, t.Term, t.Holder)
	}
	return nil
}

// shortTxRetries is how often a short ledger transaction is run again after
// the database chose it to lose a deadlock.
const shortTxRetries = 3

// short runs fn as a short ledger transaction (a claim, a failure mark, a new
// term): at READ COMMITTED on MariaDB/MySQL, whose REPEATABLE READ would lock
// the gap around a slot that has no row yet and deadlock concurrent claims of
// different jobs; and again, a few times, when it loses a deadlock anyway.
func (l *Ledger) short(ctx context.Context, fn func(tx *gorm.DB) error) error {
	var opts []*sql.TxOptions
	if l.db.Dialector.Name() == model.MySQL {
		opts = append(opts, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	}
	for attempt := 1; ; attempt++ {
		err := l.db.WithContext(ctx).Transaction(fn, opts...)
		if err == nil || attempt > shortTxRetries || !model.Deadlock(err) || ctx.Err() != nil {
			return err
		}
	}
}

// Claim records that this process runs job's slot. It returns done=true when
// the slot already succeeded (nothing to run), ErrSlotBusy when it is running
// under the same or a newer fence elsewhere, and ErrFenced when f is stale.
// A running row with an older fence belongs to a leader that is gone and is
// taken over; a failed row is tried again.
func (l *Ledger) Claim(ctx context.Context, f Fence, job string, slot time.Time) (done bool, err error) {
	slot = slot.UTC()
	err = l.short(ctx, func(tx *gorm.DB) error {
		done = false
		if err := checkTerm(tx, f); err != nil {
			return err
		}
		now := l.now().UTC()
		// Read the row under a lock first: INSERT ... ON CONFLICT DO NOTHING
		// cannot tell "inserted" from "already there" on MySQL, whose
		// ON DUPLICATE KEY UPDATE reports one affected row either way.
		var cur JobRun
		q := tx
		if tx.Dialector.Name() != model.SQLite {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		found, err := takeOne(q.Where("job = ? AND slot = ?", job, slot), &cur)
		if err != nil {
			return fmt.Errorf("read ledger row: %w", err)
		}
		if !found {
			if err := checkHorizon(tx, job, slot); err != nil {
				return err
			}
			run := JobRun{Job: job, Slot: slot, Status: StatusRunning, Holder: l.holder, Fence: f.Term, Attempts: 1, StartedAt: &now}
			if err := tx.Create(&run).Error; errors.Is(err, gorm.ErrDuplicatedKey) {
				// A concurrent claim inserted it between our read and insert.
				return fmt.Errorf("%w: %w", ErrSlotBusy, err)
			} else if err != nil {
				return fmt.Errorf("insert ledger row: %w", err)
			}
			return nil
		}
		switch {
		case cur.Status == StatusSucceeded:
			done = true
			return nil
		case cur.Status == StatusRunning && f.Manual():
			return fmt.Errorf("%w (%s, fence %d)", ErrSlotBusy, cur.Holder, cur.Fence)
		case cur.Status == StatusRunning && cur.Fence > f.Term:
			return fmt.Errorf("%w (%s, fence %d)", ErrSlotBusy, cur.Holder, cur.Fence)
		}
		// failed, or running under an older fence (a leader that is gone),
		// or our own earlier attempt: take it over.
		return tx.Model(&JobRun{}).Where("id = ?", cur.ID).Updates(map[string]any{
			"status": StatusRunning, "holder": l.holder, "fence": f.Term,
			"attempts": gorm.Expr("attempts + 1"), "started_at": now, "finished_at": nil, "error": "",
		}).Error
	})
	if err != nil {
		return false, fmt.Errorf("claim %s slot %s: %w", job, slot.Format(time.RFC3339Nano), err)
	}
	return done, nil
}

// Complete runs work (if not nil) and marks the slot succeeded in one
// transaction; with nil work it records the success of work done outside the
// database since the claim. The
// fence is checked after work, under the term row's shared lock, which is
// held to the commit: if work fails, or the fence is stale, nothing of it
// commits. No lock on the term row is held while work runs.
func (l *Ledger) Complete(ctx context.Context, f Fence, job string, slot time.Time, work func(tx *gorm.DB) error) error {
	slot = slot.UTC()
	err := l.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if work != nil {
			if err := work(tx); err != nil {
				return err
			}
		}
		if err := checkTerm(tx, f); err != nil {
			return err
		}
		now := l.now().UTC()
		res := tx.Model(&JobRun{}).
			Where("job = ? AND slot = ? AND fence = ? AND holder = ? AND status = ?", job, slot, f.Term, l.holder, StatusRunning).
			Updates(map[string]any{"status": StatusSucceeded, "finished_at": now, "error": ""})
		if res.Error != nil {
			return fmt.Errorf("mark succeeded: %w", res.Error)
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: the ledger row was taken over", ErrSlotBusy)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("run %s slot %s: %w", job, slot.Format(time.RFC3339Nano), err)
	}
	return nil
}

// errSlotHasRow means CompleteNew found the slot already in the ledger:
// nothing of its work committed, and the caller takes the claim path.
var errSlotHasRow = errors.New("the slot has a ledger row already")

// CompleteNew is the first attempt of work in the ledger's transaction, in
// one transaction instead of a claim and a completion: it runs work, checks
// the fence (under the term row's shared lock, held to the commit, as
// Complete does) and inserts the slot's row as succeeded, started at
// started.
//
// A plain read first (no transaction, no lock) stops a stale leader and
// finds a slot that has a row already (done, running elsewhere, failed
// before) without running work: the error wraps ErrFenced or
// errSlotHasRow. A row that appears after that read makes the insert fail
// on the ledger's unique key: nothing commits, and the error wraps
// errSlotHasRow. A slot at or before the job's horizon (its history
// pruned) also takes the claim path, which refuses it with ErrPruned. No
// row is locked before work: on MariaDB a locking read of a missing row
// takes a gap lock, and concurrent slots of different jobs deadlock on them.
func (l *Ledger) CompleteNew(ctx context.Context, f Fence, job string, slot, started time.Time, work func(tx *gorm.DB) error) error {
	slot = slot.UTC()
	started = started.UTC()
	var seen struct {
		Term    *int64
		NRows   int64
		NPruned int64
	}
	if err := l.db.WithContext(ctx).Raw("SELECT (SELECT term FROM leader_terms WHERE scope = ?) AS term, (SELECT COUNT(*) FROM job_runs WHERE job = ? AND slot = ?) AS n_rows, "+
		"(SELECT COUNT(*) FROM job_horizons WHERE job = ? AND pruned_through >= ?) AS n_pruned",
		f.Scope, job, slot, job, slot).Scan(&seen).Error; err != nil {
		return fmt.Errorf("run %s slot %s: read ledger: %w", job, slot.Format(time.RFC3339Nano), err)
	}
	switch {
	case !f.Manual() && (seen.Term == nil || *seen.Term != f.Term):
		return fmt.Errorf("run %s slot %s: %w (ours %d)", job, slot.Format(time.RFC3339Nano), ErrFenced, f.Term)
	case seen.NRows > 0:
		return errSlotHasRow
	case seen.NPruned > 0:
		// The claim path says so with the horizon's time.
		return errSlotHasRow
	}
	err := l.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := work(tx); err != nil {
			return err
		}
		if err := checkTerm(tx, f); err != nil {
			return err
		}
		now := l.now().UTC()
		run := JobRun{Job: job, Slot: slot, Status: StatusSucceeded, Holder: l.holder, Fence: f.Term,
			Attempts: 1, StartedAt: &started, FinishedAt: &now}
		if err := tx.Create(&run).Error; errors.Is(err, gorm.ErrDuplicatedKey) {
			return fmt.Errorf("%w: %w", errSlotHasRow, err)
		} else if err != nil {
			return fmt.Errorf("insert ledger row: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("run %s slot %s: %w", job, slot.Format(time.RFC3339Nano), err)
	}
	return nil
}

// Fail marks the slot failed with cause, if this process still holds it,
// or records it as failed after one attempt if it has no row (a first
// attempt through CompleteNew); a row that another process took over is
// left alone.
func (l *Ledger) Fail(ctx context.Context, f Fence, job string, slot time.Time, started time.Time, cause error) error {
	msg := errorText(cause.Error())
	now := l.now().UTC()
	slot, started = slot.UTC(), started.UTC()
	err := l.short(ctx, func(tx *gorm.DB) error {
		if err := checkTerm(tx, f); err != nil {
			return err
		}
		res := tx.Model(&JobRun{}).
			Where("job = ? AND slot = ? AND fence = ? AND holder = ? AND status = ?", job, slot, f.Term, l.holder, StatusRunning).
			Updates(map[string]any{"status": StatusFailed, "finished_at": now, "error": msg})
		if res.Error != nil || res.RowsAffected > 0 {
			return res.Error
		}
		run := JobRun{Job: job, Slot: slot, Status: StatusFailed, Holder: l.holder, Fence: f.Term,
			Attempts: 1, StartedAt: &started, FinishedAt: &now, Error: msg}
		return tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&run).Error
	})
	if err != nil {
		return fmt.Errorf("mark %s slot %s failed: %w", job, slot.Format(time.RFC3339Nano), err)
	}
	return nil
}

// LastSucceeded returns the latest slot of job that succeeded, and whether
// the job has any ledger row at all.
func (l *Ledger) LastSucceeded(ctx context.Context, job string) (last time.Time, history bool, err error) {
	db := l.db.WithContext(ctx)
	var runs []JobRun
	if err := db.Where("job = ?", job).Order("slot DESC").Limit(1).Find(&runs).Error; err != nil {
		return time.Time{}, false, fmt.Errorf("read ledger of %s: %w", job, err)
	}
	if len(runs) == 0 {
		return time.Time{}, false, nil
	}
	runs = runs[:0]
	if err := db.Where("job = ? AND status = ?", job, StatusSucceeded).Order("slot DESC").Limit(1).Find(&runs).Error; err != nil {
		return time.Time{}, true, fmt.Errorf("read ledger of %s: %w", job, err)
	}
	if len(runs) == 0 {
		return time.Time{}, true, nil
	}
	return runs[0].Slot.UTC(), true, nil
}

// takeOne loads the first row of q into dst and reports whether there was one.
func takeOne(q *gorm.DB, dst any) (bool, error) {
	err := q.Take(dst).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return false, nil
	}
	return err == nil, err
}

// errBatchNeedsSlotPath means a batch met a slot that is not simply new or
// done (running elsewhere, or failed before): the caller runs the batch's
// slots one by one instead, where each such case has its own rule.
var errBatchNeedsSlotPath = errors.New("a slot in the batch has a running or failed ledger row")

// CompleteBatch runs work for every slot of job in slots that has no ledger
// row yet and records them all as succeeded, in one transaction with the
// fence checked last (as Complete does). Slots already succeeded are
// skipped and returned as done. If any slot has a running or failed row,
// nothing is done and the error wraps errBatchNeedsSlotPath; if a slot
// without a row is at or before the job's horizon, the error wraps
// ErrPruned.
func (l *Ledger) CompleteBatch(ctx context.Context, f Fence, job string, slots []time.Time, work func(tx *gorm.DB, todo []time.Time) error) (done []time.Time, err error) {
	utc := make([]time.Time, len(slots))
	for i, s := range slots {
		utc[i] = s.UTC()
	}
	err = l.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		done = done[:0]
		var rows []JobRun
		q := tx
		if tx.Dialector.Name() != model.SQLite {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		if err := q.Where("job = ? AND slot IN ?", job, utc).Find(&rows).Error; err != nil {
			return fmt.Errorf("read ledger rows: %w", err)
		}
		have := make(map[int64]bool, len(rows))
		for _, r := range rows {
			if r.Status != StatusSucceeded {
				return fmt.Errorf("%w: %s is %s", errBatchNeedsSlotPath, r.Slot.UTC().Format(time.RFC3339Nano), r.Status)
			}
			have[r.Slot.UTC().UnixNano()] = true
		}
		var todo []time.Time
		for i, s := range utc {
			if have[s.UnixNano()] {
				done = append(done, slots[i])
			} else {
				todo = append(todo, slots[i])
			}
		}
		if len(todo) == 0 {
			return checkTerm(tx, f)
		}
		if err := checkHorizon(tx, job, slices.MinFunc(todo, time.Time.Compare)); err != nil {
			return err
		}
		if err := work(tx, todo); err != nil {
			return err
		}
		if err := checkTerm(tx, f); err != nil {
			return err
		}
		now := l.now().UTC()
		runs := make([]JobRun, len(todo))
		for i, s := range todo {
			runs[i] = JobRun{Job: job, Slot: s.UTC(), Status: StatusSucceeded, Holder: l.holder, Fence: f.Term,
				Attempts: 1, StartedAt: &now, FinishedAt: &now}
		}
		if err := tx.Create(&runs).Error; err != nil {
			return fmt.Errorf("insert ledger rows: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("run %s slots %s to %s: %w", job, utc[0].Format(time.RFC3339Nano), utc[len(utc)-1].Format(time.RFC3339Nano), err)
	}
	return done, nil
}

// MaxErrorLen is how many bytes of a failure's text the ledger keeps.
const MaxErrorLen = 1000

// errorText makes msg fit the ledger's error column: valid UTF-8 without NUL
// (which MariaDB and PostgreSQL refuse), cut at a character boundary to at
// most MaxErrorLen bytes.
func errorText(msg string) string {
	msg = strings.ToValidUTF8(strings.ReplaceAll(msg, "\x00", ""), "\uFFFD")
	if len(msg) <= MaxErrorLen {
		return msg
	}
	n := MaxErrorLen
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n]
}
