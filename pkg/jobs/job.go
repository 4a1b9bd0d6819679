package jobs

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/model"
)

// Slot is what a job receives for one slot: the slot context. It never
// carries the current time: a caught-up or backfilled slot does the work of
// its own time.
type Slot struct {
	// Job is the job's name.
	Job string
	// Time is the slot's time, in UTC.
	Time time.Time
	// Prev is the schedule's slot before Time, in UTC (zero if the
	// schedule had none in the last five years): [Prev, Time) is the slot's
	// interval.
	Prev time.Time
	// Date is Time's calendar date in the job's zone.
	Date model.Date
	// Location is the job's zone.
	Location *time.Location
	// Key is "<job>@<slot RFC 3339 UTC>": the same on every attempt, leader,
	// catch-up and backfill of the slot. External work is keyed on it.
	Key string
	// Attempt counts the attempts of this slot by this process, from 1.
	Attempt int
	// Term is the leadership term (the fence) the slot runs under; 0 for a
	// manual run (once, backfill).
	Term int64
}

// SlotKey is the idempotency key of job's slot: <job>@<slot, RFC 3339 UTC>.
// A slot of a schedule is a whole second and has no fraction; a triggered
// slot (Scheduler.Trigger) may have one, so its key is its own.
func SlotKey(job string, slot time.Time) string {
	return job + "@" + slot.UTC().Format(time.RFC3339Nano)
}

// TxJob is work in the ledger's database. RunTx receives the transaction that
// also marks the slot succeeded: what it writes through tx commits together
// with the ledger row, or not at all — the slot's effect happens exactly
// once. RunTx must not commit or roll back tx.
type TxJob interface {
	RunTx(ctx context.Context, tx *gorm.DB, slot Slot) error
}

// Job is work outside the ledger's database (a request, a process). It runs
// between the committed claim of the slot and the transaction that records
// its success under the fence: a slot is delivered at least once, and
// recorded once. Every attempt of a slot carries the same Slot.Key, so a
// receiver that keys on it sees each slot's effect once. Run must return
// when ctx ends.
type Job interface {
	Run(ctx context.Context, slot Slot) error
}

// BatchTxJob is a TxJob that can also run many slots in one transaction, as
// backfill does. RunTxBatch must do what RunTx would do for each slot.
type BatchTxJob interface {
	TxJob
	RunTxBatch(ctx context.Context, tx *gorm.DB, slots []Slot) error
}

// Migrator is implemented by work that needs tables of its own; Migrate
// creates or adopts them. The engine migrates its ledger and every
// definition's work that implements Migrator (see Migrate).
type Migrator interface {
	Migrate(ctx context.Context, db *gorm.DB) error
}

// TxFunc adapts a function to TxJob.
type TxFunc func(ctx context.Context, tx *gorm.DB, slot Slot) error

// RunTx implements TxJob.
func (f TxFunc) RunTx(ctx context.Context, tx *gorm.DB, slot Slot) error { return f(ctx, tx, slot) }

// Func adapts a function to Job.
type Func func(ctx context.Context, slot Slot) error

// Run implements Job.
func (f Func) Run(ctx context.Context, slot Slot) error { return f(ctx, slot) }

// Policy is how the engine runs one job's slots. The zero value of a field
// means the engine's default (Defaults).
type Policy struct {
	// Suspend stops new slots; the slots that pass while suspended are
	// reported as missed, not caught up.
	Suspend bool
	// CatchUpWindow is how far back a new leader runs missed slots.
	CatchUpWindow time.Duration
	// CatchUpLimit is how many missed slots a new leader runs at most (the
	// most recent ones). Negative disables catch-up.
	CatchUpLimit int
	// Timeout bounds one attempt.
	Timeout time.Duration
	// Attempts is how many attempts a slot gets at most, the first
	// included; 0 means as many as fit before the slot's deadline.
	Attempts int
	// RetryInitial and RetryMax shape the capped exponential backoff
	// between attempts.
	RetryInitial, RetryMax time.Duration
	// HistoryRetention is how long the job's finished ledger rows are kept,
	// counted from their slot; KeepHistory (negative) keeps them all. The
	// last succeeded slot and running rows are always kept.
	HistoryRetention time.Duration
}

// defaultPolicy is the policy of a job that sets nothing.
var defaultPolicy = Policy{
	CatchUpWindow: 48 * time.Hour,
	CatchUpLimit:  DefaultCatchUpLimit,
	Timeout:       10 * time.Minute,
	RetryInitial:  time.Second,
	RetryMax:      time.Minute,
	// A week of a per-second job is 604,800 rows.
	HistoryRetention: DefaultHistoryRetention,
}

// DefaultPolicy returns the policy the engine uses where neither the job nor
// Options.Defaults set a field.
func DefaultPolicy() Policy { return defaultPolicy }

// withDefaults fills p's zero fields from d.
func (p Policy) withDefaults(d Policy) Policy {
	if p.CatchUpWindow <= 0 {
		p.CatchUpWindow = d.CatchUpWindow
	}
	if p.CatchUpLimit == 0 {
		p.CatchUpLimit = d.CatchUpLimit
	}
	if p.Timeout <= 0 {
		p.Timeout = d.Timeout
	}
	if p.Attempts == 0 {
		p.Attempts = d.Attempts
	}
	if p.RetryInitial <= 0 {
		p.RetryInitial = d.RetryInitial
	}
	if p.RetryMax <= 0 {
		p.RetryMax = d.RetryMax
	}
	if p.RetryMax < p.RetryInitial {
		p.RetryMax = p.RetryInitial
	}
	if p.HistoryRetention == 0 {
		p.HistoryRetention = d.HistoryRetention
	}
	return p
}

// Definition is one job as the engine runs it.
type Definition struct {
	// Name is the job's name in the ledger (at most 64 bytes).
	Name string
	// Schedule gives the job's slots, in its zone.
	Schedule *Schedule
	// Policy is how its slots run.
	Policy Policy
	// Work is a TxJob (work in the ledger's transaction) or a Job (work
	// outside the database); a value that is both runs as a TxJob.
	Work any
	// Kind names the work's kind, for listings and logs; the engine does
	// not interpret it.
	Kind string
	// Revision identifies the definition's content: the engine treats a
	// definition whose Revision changed as changed (schedule, policy or
	// work). Empty: compared by schedule and policy only.
	Revision string
}

// Check reports what is wrong with d, naming the field.
func (d Definition) Check() error {
	switch {
	case d.Name == "":
		return fmt.Errorf("job definition: Name is empty")
	case len(d.Name) > 64:
		return fmt.Errorf("job %s: Name is longer than 64 bytes", d.Name)
	case d.Schedule == nil:
		return fmt.Errorf("job %s: Schedule is nil", d.Name)
	}
	switch d.Work.(type) {
	case TxJob, Job:
	default:
		return fmt.Errorf("job %s: Work (%T) is neither a jobs.TxJob nor a jobs.Job", d.Name, d.Work)
	}
	if d.Policy.CatchUpWindow < 0 || d.Policy.Timeout < 0 || d.Policy.Attempts < 0 || d.Policy.RetryInitial < 0 || d.Policy.RetryMax < 0 {
		return fmt.Errorf("job %s: Policy has a negative field", d.Name)
	}
	return nil
}

func (d Definition) same(o Definition) bool {
	return d.Revision == o.Revision && d.Schedule.String() == o.Schedule.String() &&
		d.Schedule.Location().String() == o.Schedule.Location().String() && d.Policy == o.Policy
}

// Metrics are told what happens to every job's slots. pkg/metrics has a
// Prometheus implementation; nil Options.Metrics means none.
type Metrics interface {
	// JobStarted is called when leadership starts for a job, with its last
	// succeeded slot as the ledger has it (zero if none).
	JobStarted(job string, lastSuccess time.Time)
	// SlotStarted is called once per slot, before its first attempt.
	SlotStarted(job string, slot time.Time)
	// Attempt is called after each attempt of a slot, with how long it took.
	Attempt(job string, outcome Outcome, took time.Duration)
	// SlotDone is called once per slot, with how it ended.
	SlotDone(job string, outcome Outcome, slot time.Time)
	// Missed counts slots not run: outside the catch-up window or limit,
	// or passed while the job was suspended.
	Missed(job string, n int)
	// CaughtUp counts a past slot run late when leadership started.
	CaughtUp(job string)
	// NextSlot is the leader's next scheduled slot of job, and interval the
	// schedule's spacing there (next minus the slot before it; zero if none
	// within the schedule's range). The zero next means the job has none
	// here: suspended, removed, past its schedule's last slot, or this
	// process no longer leads.
	NextSlot(job string, next time.Time, interval time.Duration)
}

type noMetrics struct{}

func (noMetrics) JobStarted(string, time.Time)              {}
func (noMetrics) SlotStarted(string, time.Time)             {}
func (noMetrics) Attempt(string, Outcome, time.Duration)    {}
func (noMetrics) SlotDone(string, Outcome, time.Time)       {}
func (noMetrics) Missed(string, int)                        {}
func (noMetrics) CaughtUp(string)                           {}
func (noMetrics) NextSlot(string, time.Time, time.Duration) {}

// Diff names the jobs added, changed (another Revision) and removed from
// before to after, as the log lines of a live change name them.
func Diff(before, after []Definition) (added, changed, removed []string) {
	old := map[string]Definition{}
	for _, d := range before {
		old[d.Name] = d
	}
	for _, d := range after {
		o, ok := old[d.Name]
		switch {
		case !ok:
			added = append(added, d.Name)
		case o.Revision != d.Revision:
			changed = append(changed, d.Name)
		}
		delete(old, d.Name)
	}
	for name := range old {
		removed = append(removed, name)
	}
	return added, changed, removed
}
