package jobs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/model"
)

// probeJob reports every slot it starts on started, then runs do (if set).
type probeJob struct {
	started chan time.Time
	do      func(ctx context.Context, slot time.Time) error
	running atomic.Int32
	maxConc atomic.Int32
}

func newProbe() *probeJob { return &probeJob{started: make(chan time.Time, 1000)} }

// Name is the probe's job name.
func (*probeJob) Name() string { return "probe" }

// RunTx implements TxJob.
func (p *probeJob) RunTx(ctx context.Context, _ *gorm.DB, s Slot) error {
	slot := s.Time
	n := p.running.Add(1)
	defer p.running.Add(-1)
	for {
		m := p.maxConc.Load()
		if n <= m || p.maxConc.CompareAndSwap(m, n) {
			break
		}
	}
	p.started <- slot
	if p.do != nil {
		return p.do(ctx, slot)
	}
	return nil
}

// next waits for the job's next slot.
func (p *probeJob) next(t *testing.T) time.Time {
	t.Helper()
	select {
	case s := <-p.started:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting for a slot to start")
		return time.Time{}
	}
}

// recorder is a Metrics that counts what the engine tells it.
type recorder struct {
	mu     sync.Mutex
	counts map[string]float64 // "what/job[/outcome]"
	last   map[string]time.Time
	next   map[string]nextSlot // NextSlot's latest, by job
}

type nextSlot struct {
	at       time.Time
	interval time.Duration
}

func newRecorder() *recorder {
	return &recorder{counts: map[string]float64{}, last: map[string]time.Time{}, next: map[string]nextSlot{}}
}

func (r *recorder) nextSlot(job string) nextSlot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next[job]
}

func (r *recorder) add(key string, n float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[key] += n
}

func (r *recorder) get(key string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key]
}

func (r *recorder) lastSuccess(job string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[job]
}

func (r *recorder) JobStarted(job string, last time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !last.IsZero() {
		r.last[job] = last
	}
}
func (r *recorder) SlotStarted(job string, _ time.Time) { r.add("started/"+job, 1) }
func (r *recorder) Attempt(job string, o Outcome, _ time.Duration) {
	r.add("attempts/"+job+"/"+o.String(), 1)
}
func (r *recorder) SlotDone(job string, o Outcome, slot time.Time) {
	r.add("slots/"+job+"/"+o.String(), 1)
	if o == Succeeded {
		r.mu.Lock()
		r.last[job] = slot
		r.mu.Unlock()
	}
}
func (r *recorder) Missed(job string, n int) { r.add("missed/"+job, float64(n)) }
func (r *recorder) CaughtUp(job string)      { r.add("caughtup/"+job, 1) }
func (r *recorder) NextSlot(job string, next time.Time, interval time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next[job] = nextSlot{next, interval}
}

type harness struct {
	db    *gorm.DB
	clock *clocktesting.FakeClock
	sched *Scheduler
	m     *recorder
	fence Fence
}

// newHarness leads one job, named name, on expr in loc, from now on a fake clock.
func newHarness(t *testing.T, db *gorm.DB, name string, work any, expr string, loc *time.Location, now time.Time, tune func(*Options)) *harness {
	t.Helper()
	h := &harness{db: db, clock: clocktesting.NewFakeClock(now), m: newRecorder()}
	opts := Options{
		Clock: h.clock, Log: quietLog(), Metrics: h.m,
		Defaults: Policy{RetryInitial: time.Millisecond, RetryMax: 4 * time.Millisecond},
	}
	if tune != nil {
		tune(&opts)
	}
	s, err := New(db, "leader", []Definition{def(t, name, expr, loc, work)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.sched = s
	h.fence, err = s.Ledger().BeginTerm(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// lead starts Lead in the background; stop drains it and returns its error.
func (h *harness) lead(t *testing.T) (cancel context.CancelFunc, drain func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	drainCh := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- h.sched.Lead(ctx, drainCh, h.fence) }()
	var (
		once sync.Once
		err  error
	)
	stop := func() error {
		once.Do(func() {
			close(drainCh)
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Error("Lead did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { cancel(); _ = stop() })
	return cancel, stop
}

// seed records a succeeded slot, as an earlier leader would have.
func seed(t *testing.T, db *gorm.DB, job string, slot time.Time) {
	t.Helper()
	now := slot.UTC()
	if err := db.Create(&JobRun{Job: job, Slot: now, Status: StatusSucceeded, Holder: "earlier", Fence: 0, Attempts: 1, StartedAt: &now, FinishedAt: &now}).Error; err != nil {
		t.Fatal(err)
	}
}

// awaitWaiting waits until the scheduler blocks on its clock (the next slot).
func awaitWaiting(t *testing.T, c *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !c.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("scheduler never waited for its next slot")
		}
		time.Sleep(time.Millisecond) // polling a condition, not standing in for it
	}
}

func minute(h, m int) time.Time { return time.Date(2026, 11, 24, h, m, 0, 0, time.UTC) }

func TestCatchUpRunsGapOldestFirstThenFollowsSchedule(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(30*time.Second), nil)
		seed(t, db, p.Name(), minute(11, 55))
		_, stop := h.lead(t)
		for _, want := range []time.Time{minute(11, 56), minute(11, 57), minute(11, 58), minute(11, 59), minute(12, 0)} {
			if got := p.next(t); !got.Equal(want) {
				t.Fatalf("caught-up slot %s, want %s", got, want)
			}
		}
		awaitWaiting(t, h.clock)
		h.clock.Step(30 * time.Second)
		if got := p.next(t); !got.Equal(minute(12, 1)) {
			t.Fatalf("next scheduled slot %s, want 12:01", got)
		}
		awaitWaiting(t, h.clock)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := h.m.get("caughtup/" + p.Name()); got != 5 {
			t.Errorf("caught-up metric = %v, want 5", got)
		}
		rs := runs(t, db, p.Name())
		if len(rs) != 7 {
			t.Fatalf("ledger has %d rows, want 7 (seed + 5 caught up + 1)", len(rs))
		}
		for _, r := range rs {
			if r.Status != StatusSucceeded {
				t.Errorf("slot %s is %s", r.Slot, r.Status)
			}
		}
	})
}

func TestCatchUpLimitAndWindow(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tune      func(*Options)
		first     time.Time
		run, miss int
	}{
		{"limit", func(o *Options) { o.Defaults.CatchUpLimit = 3 }, minute(11, 58), 3, 57},
		{"window", func(o *Options) { o.Defaults.CatchUpWindow = 30 * time.Minute }, minute(11, 31), 30, 30},
		{"disabled", func(o *Options) { o.Defaults.CatchUpLimit = -1 }, minute(12, 1), 0, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachDialect(t, func(t *testing.T, db *gorm.DB) {
				p := newProbe()
				h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(30*time.Second), tc.tune)
				seed(t, db, p.Name(), minute(11, 0))
				_, stop := h.lead(t)
				if tc.run == 0 {
					awaitWaiting(t, h.clock)
					h.clock.Step(30 * time.Second)
				}
				if got := p.next(t); !got.Equal(tc.first) {
					t.Fatalf("first slot run %s, want %s", got, tc.first)
				}
				for i := 1; i < tc.run; i++ {
					p.next(t)
				}
				awaitWaiting(t, h.clock)
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				if got := h.m.get("missed/" + p.Name()); got != float64(tc.miss) {
					t.Errorf("missed metric = %v, want %d", got, tc.miss)
				}
				if n := len(runs(t, db, p.Name())); n != 1+max(tc.run, 1) {
					t.Errorf("ledger rows = %d, want %d", n, 1+max(tc.run, 1))
				}
			})
		})
	}
}

// A job whose every slot so far failed (its first leader's attempt failed
// for good, say) is caught up from its first slot in the ledger, not from
// the catch-up window's start: the slots before the job existed never run.
func TestCatchUpWithoutSuccessStartsAtTheFirstSlot(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(30*time.Second), nil)
		at := minute(11, 57)
		if err := db.Create(&JobRun{Job: p.Name(), Slot: at, Status: StatusFailed, Holder: "earlier", Attempts: 3, StartedAt: &at, FinishedAt: &at, Error: "boom"}).Error; err != nil {
			t.Fatal(err)
		}
		_, stop := h.lead(t)
		for _, want := range []time.Time{minute(11, 57), minute(11, 58), minute(11, 59), minute(12, 0)} {
			if got := p.next(t); !got.Equal(want) {
				t.Fatalf("caught-up slot %s, want %s", got, want)
			}
		}
		awaitWaiting(t, h.clock)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if n := len(runs(t, db, p.Name())); n != 4 {
			t.Errorf("ledger rows = %d, want 4: from the failed first slot, nothing before it", n)
		}
		if got := h.m.get("missed/" + p.Name()); got != 0 {
			t.Errorf("missed metric = %v, want 0", got)
		}
	})
}

func TestNoHistoryRunsOnlyMostRecentSlot(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		h := newHarness(t, db, "stamp", stampJob{}, "50 0 0 * * *", time.UTC, minute(12, 0), nil)
		_, stop := h.lead(t)
		awaitWaiting(t, h.clock)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		rs := runs(t, db, "stamp")
		if len(rs) != 1 || !rs[0].Slot.Equal(time.Date(2026, 11, 24, 0, 0, 50, 0, time.UTC)) || rs[0].Status != StatusSucceeded {
			t.Fatalf("ledger = %+v, want only today's 00:00:50 slot, succeeded", rs)
		}
		if n := stamps(t, db, model.Date{Year: 2026, Month: 11, Day: 23}); n != 0 {
			t.Fatalf("yesterday was written without history")
		}
	})
}

func TestRetriesWithBackoffUntilSuccess(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		var calls atomic.Int32
		p.do = func(context.Context, time.Time) error {
			if calls.Add(1) < 3 {
				return errors.New("transient")
			}
			return nil
		}
		s, err := New(db, "manual", []Definition{def(t, "probe", "@daily", time.UTC, p)}, Options{
			Log: quietLog(), Defaults: Policy{RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		slot := minute(0, 0)
		out, err := s.RunSlot(context.Background(), Fence{}, "probe", slot, time.Now().Add(time.Minute))
		if err != nil || out != Succeeded {
			t.Fatalf("RunSlot = %v, %v", out, err)
		}
		rs := runs(t, db, "probe")
		if len(rs) != 1 || rs[0].Attempts != 3 || rs[0].Status != StatusSucceeded {
			t.Fatalf("ledger = %+v, want 3 attempts, succeeded", rs)
		}
		// Failing for good: gives up at the deadline and records the failure.
		p.do = func(context.Context, time.Time) error { return errors.New("permanent") }
		out, err = s.RunSlot(context.Background(), Fence{}, "probe", slot.Add(24*time.Hour), time.Now().Add(500*time.Millisecond))
		if err != nil || out != Failed {
			t.Fatalf("RunSlot = %v, %v; want Failed", out, err)
		}
		if rs := runs(t, db, "probe"); rs[1].Status != StatusFailed || rs[1].Error == "" || rs[1].Attempts < 2 {
			t.Fatalf("ledger = %+v, want a failed row after several attempts", rs[1])
		}
	})
}

func TestJobNeverOverlapsItself(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		gate := make(chan struct{})
		p.do = func(ctx context.Context, slot time.Time) error {
			if slot.Second() == 1 {
				<-gate
			}
			return nil
		}
		start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
		h := newHarness(t, db, p.Name(), p, "* * * * * *", time.UTC, start, nil)
		seed(t, db, p.Name(), start)
		_, stop := h.lead(t)
		awaitWaiting(t, h.clock)
		h.clock.Step(time.Second)
		if got := p.next(t); got.Second() != 1 {
			t.Fatalf("first slot %s", got)
		}
		h.clock.Step(3 * time.Second) // slots :02 :03 :04 come due while :01 runs
		close(gate)
		for want := 2; want <= 4; want++ {
			if got := p.next(t); got.Second() != want {
				t.Fatalf("slot %s, want second %d", got, want)
			}
		}
		awaitWaiting(t, h.clock)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if m := p.maxConc.Load(); m != 1 {
			t.Fatalf("job ran %d times at once", m)
		}
	})
}

func TestShutdownLetsRunningSlotFinish(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		gate := make(chan struct{})
		p.do = func(ctx context.Context, _ time.Time) error {
			<-gate
			return ctx.Err()
		}
		h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(time.Second), nil)
		seed(t, db, p.Name(), minute(11, 59))
		_, stop := h.lead(t)
		slot := p.next(t)
		errc := make(chan error, 1)
		go func() { errc <- stop() }() // SIGTERM while the slot runs
		close(gate)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		rs := runs(t, db, p.Name())
		if last := rs[len(rs)-1]; !last.Slot.Equal(slot) || last.Status != StatusSucceeded {
			t.Fatalf("slot running at shutdown ended %s, want succeeded", last.Status)
		}
	})
}

func TestShutdownGraceExpiresAndRollsBack(t *testing.T) {
	p := newProbe()
	p.do = func(ctx context.Context, _ time.Time) error {
		<-ctx.Done()
		return ctx.Err()
	}
	db := openDB(t, "sqlite://"+t.TempDir()+"/grace.db")
	h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(time.Second), func(o *Options) { o.ShutdownGrace = 5 * time.Second })
	seed(t, db, p.Name(), minute(11, 59))
	_, stop := h.lead(t)
	p.next(t)
	errc := make(chan error, 1)
	go func() { errc <- stop() }()
	awaitWaiting(t, h.clock) // the grace timer
	h.clock.Step(5 * time.Second)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	rs := runs(t, db, p.Name())
	if last := rs[len(rs)-1]; last.Status == StatusSucceeded {
		t.Fatalf("slot cancelled after the grace period was marked succeeded")
	}
}

func TestLeadershipLossCancelsRunningSlot(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		p.do = func(ctx context.Context, _ time.Time) error {
			<-ctx.Done()
			return ctx.Err()
		}
		h := newHarness(t, db, p.Name(), p, "50 0 0 * * *", time.UTC, minute(12, 0), nil)
		cancel, stop := h.lead(t)
		p.next(t)
		cancel() // the lease is gone
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if rs := runs(t, db, p.Name()); len(rs) != 1 || rs[0].Status == StatusSucceeded {
			t.Fatalf("ledger = %+v, want the slot not succeeded", rs)
		}
	})
}

func TestFencedLeaderStops(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(time.Second), nil)
		seed(t, db, p.Name(), minute(12, 0))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- h.sched.Lead(ctx, nil, h.fence) }()
		awaitWaiting(t, h.clock)
		if _, err := NewLedger(db, "usurper").BeginTerm(context.Background(), h.fence.Scope); err != nil {
			t.Fatal(err)
		}
		h.clock.Step(time.Minute)
		select {
		case err := <-done:
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("Lead = %v, want ErrFenced", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("fenced leader kept leading")
		}
		if len(p.started) != 0 {
			t.Fatal("fenced leader ran the job")
		}
	})
}

// The scheduler across a spring-forward and a fall-back day in New York:
// the 02:30 that does not exist still runs (at 03:00 EDT), and the 01:30 that
// happens twice runs once.
func TestDSTDaysThroughTheScheduler(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	for _, tc := range []struct {
		name, expr string
		last, now  time.Time
		want       []model.Date
	}{
		{"spring-forward", "0 30 2 * * *", time.Date(2026, 3, 7, 2, 30, 0, 0, ny), time.Date(2026, 3, 9, 12, 0, 0, 0, ny),
			[]model.Date{{Year: 2026, Month: 3, Day: 8}, {Year: 2026, Month: 3, Day: 9}}},
		{"fall-back", "0 30 1 * * *", time.Date(2026, 10, 31, 1, 30, 0, 0, ny), time.Date(2026, 11, 2, 12, 0, 0, 0, ny),
			[]model.Date{{Year: 2026, Month: 11, Day: 1}, {Year: 2026, Month: 11, Day: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachDialect(t, func(t *testing.T, db *gorm.DB) {
				h := newHarness(t, db, "stamp", stampJob{}, tc.expr, ny, tc.now, nil)
				seed(t, db, "stamp", tc.last)
				_, stop := h.lead(t)
				awaitWaiting(t, h.clock)
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				rs := runs(t, db, "stamp")
				if len(rs) != 1+len(tc.want) {
					t.Fatalf("ledger = %d rows, want %d", len(rs), 1+len(tc.want))
				}
				for _, d := range tc.want {
					if n := stamps(t, db, d); n != 1 {
						t.Errorf("stamps has %d rows for %s, want 1", n, d)
					}
				}
			})
		})
	}
}

// A ledger that cannot be read when leadership starts, for a reason that
// retrying does not mend, ends Lead with that error instead of a silent nil
// (the process would exit 0 and log nothing).
func TestLeadReturnsUnreadableLedger(t *testing.T) {
	forEachDialect(t, func(t *testing.T, db *gorm.DB) {
		p := newProbe()
		h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(time.Second), nil)
		if err := db.Exec("DROP TABLE job_runs").Error; err != nil {
			t.Fatal(err)
		}
		_, stop := h.lead(t)
		if err := stop(); err == nil || !strings.Contains(err.Error(), "cannot start") {
			t.Fatalf("Lead = %v, want the ledger's error", err)
		}
	})
	t.Run("unscannable row", func(t *testing.T) {
		db := openDB(t, testenv.DSN(t, "sqlite"))
		p := newProbe()
		h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(time.Second), nil)
		if err := db.Exec("INSERT INTO job_runs (job, slot, status, holder, fence, attempts) VALUES (?, 'not a time', 'succeeded', 'x', 1, 1)", p.Name()).Error; err != nil {
			t.Fatal(err)
		}
		_, stop := h.lead(t)
		if err := stop(); err == nil {
			t.Fatal("Lead = nil, want the scan error")
		}
	})
}

// A database that is down when leadership starts is waited for: Lead retries
// reading the ledger with backoff and runs the slot once the server is back.
func TestLeadRetriesDatabaseDownAtStart(t *testing.T) {
	srv := testenv.PostgresServer(t)
	db := openDB(t, srv.DSN(t))
	p := newProbe()
	h := newHarness(t, db, p.Name(), p, "0 * * * * *", time.UTC, minute(12, 0).Add(time.Second), nil)
	ctx := context.Background()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.sched.Lead(lctx, nil, h.fence) }()
	awaitWaiting(t, h.clock) // the retry's backoff timer
	if len(p.started) != 0 {
		t.Fatal("ran a slot while the database was down")
	}
	select {
	case err := <-done:
		t.Fatalf("Lead returned while the database was down: %v", err)
	default:
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(time.Second)
	if got := p.next(t); !got.Equal(minute(12, 0)) {
		t.Fatalf("ran slot %s, want %s", got, minute(12, 0))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Lead = %v after leadership ended", err)
	}
}
