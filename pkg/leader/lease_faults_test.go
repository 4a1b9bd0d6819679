package leader

// Faults that client-go's own elector survives, on the fake clientset: a
// slow GET, a watch that stays open but silent, a watch that closes at once,
// a release refused with a conflict. test/bench's side-by-side suite runs the
// same faults against both electors on a real kube-apiserver.

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
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
)

var leasesGVR = coordinationv1.SchemeGroupVersion.WithResource("leases")

// resourceVersions makes the fake clientset do what the API server does and
// its tracker does not: give each write a new resourceVersion and refuse an
// Update whose resourceVersion is not the stored one (409 Conflict). It
// returns a writer for "another process": it changes the stored Lease
// without going through the reactors (so it may run inside one).
func resourceVersions(t *testing.T, c *fake.Clientset) (otherWriter func(change func(*coordinationv1.Lease))) {
	t.Helper()
	var rv atomic.Int64
	next := func() string { return strconv.FormatInt(rv.Add(1), 10) }
	c.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		l.ResourceVersion = next()
		if err := c.Tracker().Create(leasesGVR, l, l.Namespace); err != nil {
			return true, nil, err
		}
		return true, l, nil
	})
	c.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		stored, err := c.Tracker().Get(leasesGVR, l.Namespace, l.Name)
		if err != nil {
			return true, nil, err
		}
		if have := stored.(*coordinationv1.Lease).ResourceVersion; have != l.ResourceVersion {
			return true, nil, apierrors.NewConflict(coordinationv1.Resource("leases"), l.Name,
				errors.New("the object has been modified; please apply your changes to the latest version and try again"))
		}
		l.ResourceVersion = next()
		if err := c.Tracker().Update(leasesGVR, l, l.Namespace); err != nil {
			return true, nil, err
		}
		return true, l, nil
	})
	return func(change func(*coordinationv1.Lease)) {
		stored, err := c.Tracker().Get(leasesGVR, "ns", "leasecron")
		if err != nil {
			t.Errorf("the other writer cannot read the Lease: %v", err)
			return
		}
		l := stored.(*coordinationv1.Lease).DeepCopy()
		change(l)
		l.ResourceVersion = next()
		if err := c.Tracker().Update(leasesGVR, l, "ns"); err != nil {
			t.Errorf("the other writer cannot write the Lease: %v", err)
		}
	}
}

// noWatch refuses list, so the follower polls with GETs.
func noWatch(c *fake.Clientset) {
	c.PrependReactor("list", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("test: no list")
	})
}

// A polling follower dates what it read to when the GET returned, as
// client-go does: a GET slow enough that the holder renewed while it was in
// flight must not make that renewal look a GET's latency older than it is.
// The holder renews once, during the follower's first GET, which takes a
// whole lease duration; the follower may take over only a lease duration
// after that renewal reached it, not at once.
func TestSlowGetSeesFreshRenewal(t *testing.T) {
	c := newClient(t)
	ghostLease(t, c, 1)
	noWatch(c)
	const leaseDuration = time.Second // newPollingLease's
	var (
		mu                 sync.Mutex
		gets               int
		renewedAt, takenAt time.Time
		renewedTo          string
	)
	c.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		gets++
		if gets > 1 {
			return false, nil, nil
		}
		// The injected fault: the request takes a lease duration to reach
		// the server, and meanwhile the holder renews.
		time.Sleep(leaseDuration)
		stored, err := c.Tracker().Get(leasesGVR, "ns", "leasecron")
		if err != nil {
			return true, nil, err
		}
		l := stored.(*coordinationv1.Lease).DeepCopy()
		renewedAt = time.Now()
		now := metav1.NewMicroTime(renewedAt)
		l.Spec.RenewTime = &now
		renewedTo = now.String()
		return false, nil, c.Tracker().Update(leasesGVR, l, "ns")
	})
	c.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		mu.Lock()
		defer mu.Unlock()
		if takenAt.IsZero() && holder(l) == "b" {
			takenAt = time.Now()
		}
		return false, nil, nil
	})
	leads, _ := runFollower(t, newPollingLease(t, c, "b", slog.New(&logSink{})))
	select {
	case <-leads:
	case <-time.After(15 * time.Second):
		t.Fatal("the follower never took over a Lease whose holder stopped renewing")
	}
	mu.Lock()
	defer mu.Unlock()
	if renewedAt.IsZero() || takenAt.IsZero() {
		t.Fatalf("the test did not run as planned: renewed at %v, taken over at %v", renewedAt, takenAt)
	}
	if age := takenAt.Sub(renewedAt); age < leaseDuration {
		t.Fatalf("the follower took over %s after a renewal (to %s) that its slow GET brought, want at least the lease duration %s: it dated the renewal to before its GET",
			age.Round(time.Millisecond), renewedTo, leaseDuration)
	}
}

// A watch that stays open but delivers nothing leaves the follower with a
// stale copy: the holder's release never shows. Its Update on that copy
// meets a conflict; it must then read the Lease with a GET (and keep doing
// so until the watch shows a change) and take the released Lease, not retry
// the stale resourceVersion forever.
func TestSilentWatchFollowerRereadsAfterConflict(t *testing.T) {
	c := newClient(t)
	other := resourceVersions(t, c)
	ghostLease(t, c, 1)
	var watches atomic.Int32
	silent := watch.NewFake() // never sends an event, never closes
	c.PrependWatchReactor("leases", func(k8stesting.Action) (bool, watch.Interface, error) {
		watches.Add(1)
		return true, silent, nil
	})
	var gets atomic.Int32
	c.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		gets.Add(1)
		return false, nil, nil
	})
	sink := &logSink{}
	b := newPollingLease(t, c, "b", slog.New(sink))
	leads, _ := runFollower(t, b)
	waitFor(t, "the follower's watch", func() bool { return sink.count(slog.LevelDebug, watchingMsg) > 0 })
	// The holder releases; the silent watch does not tell.
	other(func(l *coordinationv1.Lease) {
		none, one, now := "", int32(1), metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &none, &one, &now
	})
	select {
	case <-leads:
	case <-time.After(10 * time.Second):
		t.Fatalf("no takeover of a released 1s Lease in 10s behind a silent watch (%d conflicts logged, %d GETs)",
			sink.count(slog.LevelDebug, "another process took the lease first"), gets.Load())
	}
	if h := holder(getLease(t, c)); h != "b" {
		t.Fatalf("holder = %q, want b", h)
	}
	if n := sink.count(slog.LevelDebug, "another process took the lease first"); n > 2 {
		t.Errorf("%d conflicting Updates before the takeover, want at most 2 (one on the stale copy, then a GET)", n)
	}
	if n := watches.Load(); n != 1 {
		t.Errorf("%d watch requests, want 1 (the silent watch stays open)", n)
	}
}

// A watch that the server closes at once, without an event, is reopened
// with a backoff that starts at RetryPeriod and doubles, not at once.
func TestWatchClosingAtOnceBacksOff(t *testing.T) {
	c := newClient(t)
	ghostLease(t, c, 3600)
	var (
		mu    sync.Mutex
		times []time.Time
	)
	c.PrependWatchReactor("leases", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		return true, watch.NewEmptyWatch(), nil
	})
	sink := &logSink{}
	b := newPollingLease(t, c, "b", slog.New(sink))
	runFollower(t, b)
	waitFor(t, "four watch requests", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(times) >= 4
	})
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < 4; i++ {
		want := b.cfg.RetryPeriod << (i - 1)
		if gap := times[i].Sub(times[i-1]); gap < want {
			t.Errorf("watch %d came %s after watch %d, want at least %s (capped exponential backoff from the retry period)",
				i+1, gap, i, want)
		}
	}
	if n := sink.count(slog.LevelWarn, "cannot watch the Lease"); n != 1 {
		t.Errorf("%d warnings about the closing watch, want 1", n)
	}
}

// A release refused with a conflict (something else wrote the Lease since
// the last renewal, say a label) is retried on a fresh copy, so a follower
// takes over at once; but a Lease that another process holds by then is left
// alone.
func TestReleaseRetriesAfterConflict(t *testing.T) {
	for _, tc := range []struct {
		name       string
		change     func(*coordinationv1.Lease)
		wantHolder string
	}{
		{"labelled", func(l *coordinationv1.Lease) { l.Labels = map[string]string{"touched": "yes"} }, ""},
		{"taken", func(l *coordinationv1.Lease) { x := "x"; l.Spec.HolderIdentity = &x }, "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t)
			other := resourceVersions(t, c)
			var once sync.Once
			c.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if holder(a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)) == "" {
					// The injected fault: just before the release arrives,
					// another writer changes the Lease.
					once.Do(func() { other(tc.change) })
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
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run = %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return")
			}
			got := getLease(t, c)
			if h := holder(got); h != tc.wantHolder {
				t.Fatalf("holder after the release = %q, want %q", h, tc.wantHolder)
			}
			if tc.wantHolder == "" && (got.Labels["touched"] != "yes" || *got.Spec.LeaseDurationSeconds != 1) {
				t.Fatalf("released Lease lost the other writer's label or is not client-go's release: %+v", got)
			}
			if n := sink.count(slog.LevelWarn, "could not release"); n != 0 {
				t.Errorf("%d warnings that the release failed, want none", n)
			}
		})
	}
}
