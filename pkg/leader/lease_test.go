package leader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// client-go keeps its leader-election clock private, so these tests use short
// real timings and wait on observable events (the Lease object, callbacks)
// rather than on sleeps.

func newClient(t *testing.T) *fake.Clientset {
	c := fake.NewClientset()
	// Anything but Leases is an unexpected call.
	c.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetResource().Resource != "leases" {
			t.Errorf("unexpected API call: %s %s", a.GetVerb(), a.GetResource())
		}
		return false, nil, nil
	})
	return c
}

func newLease(t *testing.T, c *fake.Clientset, id string) *Lease {
	t.Helper()
	l, err := NewLease(LeaseConfig{
		Client: c.CoordinationV1().Leases("ns"), Namespace: "ns", Name: "leasecron", Identity: id,
		LeaseDuration: time.Second, RenewDeadline: 600 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func getLease(t *testing.T, c *fake.Clientset) *coordinationv1.Lease {
	t.Helper()
	l, err := c.CoordinationV1().Leases("ns").Get(context.Background(), "leasecron", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func holder(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// waitFor polls cond (an observation of the API, not a stand-in for one).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestValidateTimings(t *testing.T) {
	for _, tc := range []struct {
		lease, renew, retry time.Duration
		ok                  bool
	}{
		{15 * time.Second, 10 * time.Second, 2 * time.Second, true},
		{10 * time.Second, 10 * time.Second, 2 * time.Second, false},
		{15 * time.Second, 2 * time.Second, 2 * time.Second, false},
		{0, 10 * time.Second, 2 * time.Second, false},
		{15 * time.Second, 10 * time.Second, -time.Second, false},
		{15*time.Second + 500*time.Millisecond, 10 * time.Second, 2 * time.Second, false},
	} {
		if err := ValidateTimings(tc.lease, tc.renew, tc.retry); (err == nil) != tc.ok {
			t.Errorf("ValidateTimings(%s, %s, %s) = %v, want ok=%v", tc.lease, tc.renew, tc.retry, err, tc.ok)
		}
	}
}

// The lease is acquired, renewed while lead runs, kept through shutdown until
// lead returns, and only then released.
func TestLeaseReleasedOnlyAfterLeadReturns(t *testing.T) {
	c := newClient(t)
	l := newLease(t, c, "a")
	ctx, shutdown := context.WithCancel(context.Background())
	started, gate := make(chan struct{}), make(chan struct{})
	leadCtxErr := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(leaderCtx context.Context) error {
			close(started)
			<-gate
			leadCtxErr <- leaderCtx.Err()
			return nil
		})
	}()
	<-started
	if h := holder(getLease(t, c)); h != "a" {
		t.Fatalf("holder = %q, want a", h)
	}
	first := getLease(t, c).Spec.RenewTime.Time
	shutdown()
	// Renewals go on after shutdown began, while the job still runs.
	waitFor(t, "a renewal after shutdown", func() bool { return getLease(t, c).Spec.RenewTime.After(first) })
	if h := holder(getLease(t, c)); h != "a" {
		t.Fatalf("lease released while lead still ran: holder %q", h)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after a clean shutdown", err)
	}
	if err := <-leadCtxErr; err != nil {
		t.Fatalf("shutdown cancelled lead's context (%v); only leadership loss may", err)
	}
	if h := holder(getLease(t, c)); h != "" {
		t.Fatalf("lease not released after shutdown: holder %q", h)
	}
}

func TestLeaseRenewFailureEndsLeadership(t *testing.T) {
	c := newClient(t)
	// Installed up front: the fake's reactor chain may not change while the
	// elector uses it.
	var failUpdates atomic.Bool
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failUpdates.Load() {
			return true, nil, errors.New("apiserver unavailable")
		}
		return false, nil, nil
	})
	l := newLease(t, c, "a")
	started := make(chan struct{})
	done := make(chan error, 1)
	leadReturned := make(chan struct{})
	go func() {
		done <- l.Run(context.Background(), func(leaderCtx context.Context) error {
			close(started)
			<-leaderCtx.Done()
			close(leadReturned)
			return nil
		})
	}()
	<-started
	failUpdates.Store(true)
	select {
	case err := <-done:
		if !errors.Is(err, ErrLeadershipLost) {
			t.Fatalf("Run = %v, want ErrLeadershipLost", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("leader kept leading without renewals")
	}
	select {
	case <-leadReturned:
	default:
		t.Fatal("Run returned before lead did")
	}
}

func TestShutdownBeforeLeadingReturnsNil(t *testing.T) {
	c := newClient(t)
	a, b := newLease(t, c, "a"), newLease(t, c, "b")
	actx, stopA := context.WithCancel(context.Background())
	defer stopA()
	aLeads := make(chan struct{})
	go func() { _ = a.Run(actx, func(ctx context.Context) error { close(aLeads); <-actx.Done(); return nil }) }()
	<-aLeads
	bctx, stopB := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Run(bctx, func(context.Context) error { t.Error("b led while a held the lease"); return nil })
	}()
	stopB()
	if err := <-done; err != nil {
		t.Fatalf("follower Run = %v, want nil", err)
	}
}

// A follower takes over a released lease; and a leader that lost its lease
// but still holds its old fence cannot claim a slot once the new leader
// began its term: the lower fence loses to the higher one.
func TestTakeoverAndLowerFenceLoses(t *testing.T) {
	dsn, err := model.ParseDSN("sqlite://" + t.TempDir() + "/fence.db")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := model.Open(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close(db)
	if err := jobs.Migrate(ctx, db, nil); err != nil {
		t.Fatal(err)
	}

	c := newClient(t)
	a, b := newLease(t, c, "a"), newLease(t, c, "b")
	la, lb := jobs.NewLedger(db, "a"), jobs.NewLedger(db, "b")
	fences := make(chan jobs.Fence, 2)
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan error, 1)
	go func() {
		aDone <- a.Run(actx, func(context.Context) error {
			f, err := la.BeginTerm(ctx, a.Scope())
			if err != nil {
				return err
			}
			fences <- f
			<-actx.Done()
			return nil
		})
	}()
	fa := <-fences
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	go func() {
		_ = b.Run(bctx, func(context.Context) error {
			f, err := lb.BeginTerm(ctx, b.Scope())
			if err != nil {
				return err
			}
			fences <- f
			<-bctx.Done()
			return nil
		})
	}()
	stopA()
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	var fb jobs.Fence
	select {
	case fb = <-fences:
	case <-time.After(15 * time.Second):
		t.Fatal("follower never took over the released lease")
	}
	if h := holder(getLease(t, c)); h != "b" {
		t.Fatalf("holder = %q, want b", h)
	}
	if fb.Term <= fa.Term {
		t.Fatalf("new term %d not above old %d", fb.Term, fa.Term)
	}
	slot := time.Date(2026, 11, 24, 0, 0, 50, 0, time.UTC)
	if _, err := la.Claim(ctx, fa, "daily-stats", slot); !errors.Is(err, jobs.ErrFenced) {
		t.Fatalf("claim with the lower fence = %v, want ErrFenced", err)
	}
	if done, err := lb.Claim(ctx, fb, "daily-stats", slot); err != nil || done {
		t.Fatalf("claim with the higher fence = %v, %v", done, err)
	}
}

// logSink collects log records for assertions.
type logSink struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r.Clone())
	return nil
}
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *logSink) WithGroup(string) slog.Handler      { return s }

// count returns how many records at level mention every one of words (in
// the message or an attribute).
func (s *logSink) count(level slog.Level, words ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.recs {
		if r.Level != level {
			continue
		}
		text := r.Message
		r.Attrs(func(a slog.Attr) bool { text += " " + a.String(); return true })
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(text, w)
		}
		if ok {
			n++
		}
	}
	return n
}

const watchingMsg = "watching the Lease for a release"

// newSlowLease is a follower whose own poll is far too slow to matter in a
// test: whatever it does within seconds, the watch made it do.
func newSlowLease(t *testing.T, c *fake.Clientset, id string, log *slog.Logger) *Lease {
	t.Helper()
	l, err := NewLease(LeaseConfig{
		Client: c.CoordinationV1().Leases("ns"), Namespace: "ns", Name: "leasecron", Identity: id,
		LeaseDuration: 5 * time.Minute, RenewDeadline: 2 * time.Minute, RetryPeriod: time.Minute,
		Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// newPollingLease is a follower that polls every 50 ms, so that a test
// sees several of its attempts quickly.
func newPollingLease(t *testing.T, c *fake.Clientset, id string, log *slog.Logger) *Lease {
	t.Helper()
	l, err := NewLease(LeaseConfig{
		Client: c.CoordinationV1().Leases("ns"), Namespace: "ns", Name: "leasecron", Identity: id,
		LeaseDuration: time.Second, RenewDeadline: 600 * time.Millisecond, RetryPeriod: 50 * time.Millisecond,
		Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ghostLease is held by a holder that is not running, for an hour.
func ghostLease(t *testing.T, c *fake.Clientset, durationSeconds int32) {
	t.Helper()
	id, now := "ghost", metav1.NewMicroTime(time.Now())
	if _, err := c.CoordinationV1().Leases("ns").Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "leasecron"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: &id, LeaseDurationSeconds: &durationSeconds, AcquireTime: &now, RenewTime: &now,
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// runFollower runs l until the test ends; leads is closed when lead starts.
func runFollower(t *testing.T, l *Lease) (leads <-chan struct{}, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started, finished, exited := make(chan struct{}), make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		finished <- l.Run(ctx, func(context.Context) error { close(started); <-ctx.Done(); return nil })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after shutdown")
		}
	})
	return started, finished
}

// A follower whose next poll is a minute away takes over a lease at once when
// the holder releases it (client-go's release: empty holder, duration 1s) or
// when the Lease is deleted.
func TestFollowerWakesOnReleaseAndDelete(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*fake.Clientset) error
	}{
		{"released", func(c *fake.Clientset) error {
			l, err := c.CoordinationV1().Leases("ns").Get(context.Background(), "leasecron", metav1.GetOptions{})
			if err != nil {
				return err
			}
			empty, one, now := "", int32(1), metav1.NewMicroTime(time.Now())
			l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime, l.Spec.AcquireTime = &empty, &one, &now, &now
			_, err = c.CoordinationV1().Leases("ns").Update(context.Background(), l, metav1.UpdateOptions{})
			return err
		}},
		{"deleted", func(c *fake.Clientset) error {
			return c.CoordinationV1().Leases("ns").Delete(context.Background(), "leasecron", metav1.DeleteOptions{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t)
			ghostLease(t, c, 3600)
			sink := &logSink{}
			b := newSlowLease(t, c, "b", slog.New(sink))
			leads, _ := runFollower(t, b)
			waitFor(t, "the follower's watch", func() bool { return sink.count(slog.LevelDebug, watchingMsg) > 0 })
			select {
			case <-leads:
				t.Fatal("follower led while the ghost held the lease")
			default:
			}
			if err := tc.change(c); err != nil {
				t.Fatal(err)
			}
			select {
			case <-leads:
			case <-time.After(15 * time.Second):
				t.Fatalf("follower did not take over the %s lease (its next poll is a minute away)", tc.name)
			}
			if h := holder(getLease(t, c)); h != "b" {
				t.Fatalf("holder = %q, want b", h)
			}
		})
	}
}

// While the watch is connected a follower reads the Lease from it: no GETs,
// and a holder that stopped renewing still loses the lease after its
// duration (client-go's expiry, judged on the watched copy).
func TestFollowerReadsFromWatchAndTakesOverExpiredLease(t *testing.T) {
	c := newClient(t)
	ghostLease(t, c, 1)
	var (
		mu       sync.Mutex
		watching bool
		gets     int
	)
	c.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if watching {
			gets++
		}
		return false, nil, nil
	})
	sink := &logSink{}
	b, err := NewLease(LeaseConfig{
		Client: c.CoordinationV1().Leases("ns"), Namespace: "ns", Name: "leasecron", Identity: "b",
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond,
		Log: slog.New(sink),
	})
	if err != nil {
		t.Fatal(err)
	}
	leads, _ := runFollower(t, b)
	waitFor(t, "the follower's watch", func() bool { return sink.count(slog.LevelDebug, watchingMsg) > 0 })
	mu.Lock()
	watching = true
	mu.Unlock()
	select {
	case <-leads:
	case <-time.After(15 * time.Second):
		t.Fatal("follower never took over the expired lease")
	}
	mu.Lock()
	defer mu.Unlock()
	if gets != 0 {
		t.Fatalf("follower sent %d GETs while its watch was connected, want 0", gets)
	}
}

// When RBAC forbids list/watch the follower warns once and polls instead.
func TestWatchForbiddenFallsBackToPolling(t *testing.T) {
	c := newClient(t)
	ghostLease(t, c, 3600)
	var (
		mu          sync.Mutex
		lists, gets int
	)
	forbid := func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if a.GetVerb() == "list" {
			lists++
		}
		return true, nil, apierrors.NewForbidden(coordinationv1.Resource("leases"), "", errors.New("RBAC: denied"))
	}
	c.PrependReactor("list", "leases", forbid)
	c.PrependWatchReactor("leases", func(a k8stesting.Action) (bool, watch.Interface, error) {
		_, _, err := forbid(a)
		return true, nil, err
	})
	c.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		gets++
		return false, nil, nil
	})
	sink := &logSink{}
	b, err := NewLease(LeaseConfig{
		Client: c.CoordinationV1().Leases("ns"), Namespace: "ns", Name: "leasecron", Identity: "b",
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 50 * time.Millisecond,
		Log: slog.New(sink),
	})
	if err != nil {
		t.Fatal(err)
	}
	leads, _ := runFollower(t, b)
	waitFor(t, "three watch attempts and three polls", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return lists >= 3 && gets >= 3
	})
	if n := sink.count(slog.LevelWarn, "list/watch", "leases.coordination.k8s.io", "polling"); n != 1 {
		t.Fatalf("%d warnings about the forbidden watch, want exactly 1", n)
	}
	released, one, now := "", int32(1), metav1.NewMicroTime(time.Now())
	l := getLease(t, c)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &released, &one, &now
	if _, err := c.CoordinationV1().Leases("ns").Update(context.Background(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leads:
	case <-time.After(15 * time.Second):
		t.Fatal("polling follower never took over the released lease")
	}
}

// A follower refused everything says which permission is missing, keeps
// trying for ForbiddenTimeout (on a fake clock), then gives up with an error.
func TestForbiddenFollowerGivesUp(t *testing.T) {
	c := newClient(t)
	var (
		mu   sync.Mutex
		gets int
	)
	c.PrependReactor("*", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if a.GetVerb() == "get" {
			gets++
		}
		return true, nil, apierrors.NewForbidden(coordinationv1.Resource("leases"), "leasecron",
			fmt.Errorf("User %q cannot %s resource \"leases\" in API group \"coordination.k8s.io\"", "nobody", a.GetVerb()))
	})
	c.PrependWatchReactor("leases", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, nil, apierrors.NewForbidden(coordinationv1.Resource("leases"), "", errors.New("denied"))
	})
	sink := &logSink{}
	b := newPollingLease(t, c, "b", slog.New(sink))
	clk := testingclock.NewFakeClock(time.Now())
	b.clock = clk
	_, done := runFollower(t, b)
	waitFor(t, "three refused polls", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return gets >= 3
	})
	select {
	case err := <-done:
		t.Fatalf("Run gave up before ForbiddenTimeout: %v", err)
	default:
	}
	if n := sink.count(slog.LevelError, "RBAC forbids get", "leases.coordination.k8s.io", "leasecron"); n != 1 {
		t.Fatalf("%d errors naming the forbidden get on the lease, want exactly 1", n)
	}
	clk.Step(DefaultForbiddenTimeout)
	select {
	case err := <-done:
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "forbids get") || !strings.Contains(err.Error(), "leases") {
			t.Fatalf("Run = %v, want a Forbidden error naming get on leases", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run kept waiting after ForbiddenTimeout of 403s")
	}
}

// Shutdown while an acquiring write is in flight waits for its outcome. Here
// the write wins the lease, so lead runs on a live context and the lease is
// released after lead returns: a process that shuts down never leaves a
// lease held without knowing it led, and lead never starts on a dead context.
func TestShutdownDuringAcquisitionWaitsForIt(t *testing.T) {
	c := newClient(t)
	entered, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	c.PrependReactor("create", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() { close(entered); <-gate })
		return false, nil, nil
	})
	l := newLease(t, c, "a")
	ctx, shutdown := context.WithCancel(context.Background())
	leadCtxErr := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(leaderCtx context.Context) error {
			leadCtxErr <- leaderCtx.Err()
			<-ctx.Done()
			return nil
		})
	}()
	<-entered
	shutdown()
	close(gate)
	select {
	case err := <-leadCtxErr:
		if err != nil {
			t.Fatalf("lead started on a cancelled context: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the create won the lease but lead never ran")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if h := holder(getLease(t, c)); h != "" {
		t.Fatalf("holder = %q after Run returned, want the lease released", h)
	}
}

// A leader whose release is refused says so instead of claiming it released,
// and the 409s of followers racing for a Lease are not logged as errors.
func TestReleaseOutcomeIsReported(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%v", refuse), func(t *testing.T) {
			c := newClient(t)
			c.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
				l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
				if refuse && (l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "") {
					return true, nil, errors.New("test: the release is refused")
				}
				return false, nil, nil
			})
			sink := &logSink{}
			l := newLease(t, c, "a")
			l.cfg.Log = slog.New(sink)
			ctx, shutdown := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- l.Run(ctx, func(context.Context) error {
					shutdown()
					return nil
				})
			}()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			released, warned := sink.count(slog.LevelInfo, "released the lease"), sink.count(slog.LevelWarn, "could not release the lease")
			if refuse && (released != 0 || warned != 1) || !refuse && (released != 1 || warned != 0) {
				t.Fatalf("refused=%v: %d 'released' lines and %d warnings", refuse, released, warned)
			}
		})
	}
}

// Followers racing for a released Lease lose with 409 Conflict: that is the
// election working, logged at debug, while other failures are errors.
func TestConflictsAreNotErrors(t *testing.T) {
	c := newClient(t)
	// A released Lease: every follower tries to take it, and this one
	// always loses the race.
	none, one, now := "", int32(1), metav1.NewMicroTime(time.Now())
	if _, err := c.CoordinationV1().Leases("ns").Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "leasecron"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &none, LeaseDurationSeconds: &one, RenewTime: &now},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No watch, so that every read is a GET.
	c.PrependReactor("list", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("test: no list")
	})
	var gets atomic.Int32
	c.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if gets.Add(1) == 1 {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(coordinationv1.Resource("leases"), "leasecron", errors.New("the object has been modified"))
	})
	sink := &logSink{}
	b := newPollingLease(t, c, "b", slog.New(sink))
	runFollower(t, b)
	waitFor(t, "two lost races", func() bool { return sink.count(slog.LevelDebug, "another process took the lease first") >= 2 })
	if n := sink.count(slog.LevelError); n != 1 {
		t.Fatalf("%d error records, want 1 (the refused connection; conflicts are not errors)", n)
	}
	if n := sink.count(slog.LevelError, "cannot get the lease", "connection refused"); n != 1 {
		t.Fatalf("the failed get was not logged as an error")
	}
}

// A process that finds the Lease naming itself (its container restarted
// within the same Pod) takes it back at once instead of waiting for it to
// expire, keeping its acquire time and count of transitions, as client-go
// does.
func TestOwnLeaseIsTakenBackAtOnce(t *testing.T) {
	c := newClient(t)
	id, hour, transitions := "a", int32(3600), int32(4)
	acquired := metav1.NewMicroTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	if _, err := c.CoordinationV1().Leases("ns").Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "leasecron"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: &id, LeaseDurationSeconds: &hour, AcquireTime: &acquired, RenewTime: &acquired, LeaseTransitions: &transitions,
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	leads, _ := runFollower(t, newLease(t, c, "a"))
	select {
	case <-leads:
	case <-time.After(15 * time.Second):
		t.Fatal("the Lease's own holder did not take it back")
	}
	got := getLease(t, c)
	if holder(got) != "a" || !got.Spec.AcquireTime.Equal(&acquired) || *got.Spec.LeaseTransitions != transitions || *got.Spec.LeaseDurationSeconds != 1 {
		t.Fatalf("lease after taking it back: holder %q, acquired %v, transitions %d, duration %ds; want a, %v, %d, 1s",
			holder(got), got.Spec.AcquireTime, *got.Spec.LeaseTransitions, *got.Spec.LeaseDurationSeconds, acquired, transitions)
	}
}
