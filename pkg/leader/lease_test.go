package leader

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

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
		Client: c.CoordinationV1(), Namespace: "ns", Name: "leasecron", Identity: id,
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
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("apiserver unavailable")
	})
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
	if err := model.Migrate(ctx, db); err != nil {
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
