package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"
)

// leaseLock is the resourcelock.Interface the LeaderElector uses. It behaves
// like client-go's resourcelock.LeaseLock, with three additions:
//
//   - While this process follows and the watch (watchLease) is connected, Get
//     answers from the watched copy of the Lease instead of the API server.
//     The copy carries its resourceVersion, so an Update based on a stale copy
//     fails with a conflict: a stale view can delay a takeover, never make
//     one wrong. Once this process leads, every call goes to the API server.
//   - wake cancels the elector's current acquire attempt so that Run starts
//     a new one at once. It never cancels while an acquiring Create/Update is
//     in flight or after one succeeded (that would end a leadership before it
//     began): a wake-up during a call takes effect when the call returned.
//     A Create/Update whose attempt was already cancelled is refused before
//     it reaches the API server.
//   - Errors are classified: a 403 is logged once per verb naming the verb
//     and the Lease, and a follower that gets nothing but 403s for
//     forbiddenTimeout gives up (fatal).
type leaseLock struct {
	client           coordinationv1client.LeaseInterface
	namespace, name  string
	identity         string
	events           resourcelock.EventRecorder
	log              *slog.Logger
	clock            clock.PassiveClock
	forbiddenTimeout time.Duration // < 0: never give up

	stop      func() // ends the election (Run returns)
	onAcquire func() // called once, when this process acquired the Lease

	mu        sync.Mutex
	lease     *coordinationv1.Lease // last object read or written; its resourceVersion guards Update
	watched   *coordinationv1.Lease // the follower's view from the watch; nil: no such Lease
	watching  bool                  // the watch is connected: Get may answer from watched
	acquired  bool                  // a Create/Update naming this process succeeded
	inFlight  bool                  // an acquiring Create/Update is in flight
	getting   bool                  // a GET to the API server is in flight
	wakeLater bool                  // wake once the in-flight call is over
	stopLater bool                  // stop once the in-flight call is over
	cancel    context.CancelFunc    // cancels the elector's current attempt
	expiry    *time.Timer           // wakes the follower when the watched Lease expires
	denied    map[string]bool       // verbs whose 403 was logged
	deniedAt  time.Time             // first of an unbroken run of 403s; zero: none
	fatal     error                 // why a follower gave up
	released  bool                  // the leader's release (a write naming no holder) succeeded
}

var _ resourcelock.Interface = (*leaseLock)(nil)

func (k *leaseLock) leaseResource() string {
	return fmt.Sprintf("leases.coordination.k8s.io %q in namespace %q", k.name, k.namespace)
}

// beginAttempt records how to cancel the elector's next acquire attempt.
func (k *leaseLock) beginAttempt(cancel context.CancelFunc) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cancel = cancel
}

// wake makes the elector try to acquire at once instead of at its next
// RetryPeriod tick.
func (k *leaseLock) wake() {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.acquired:
	case k.inFlight, k.getting:
		// Cancelling now would fail the call (and log an error); act on
		// the wake-up once it returned.
		k.wakeLater = true
	case k.cancel != nil:
		k.cancel()
	}
}

// shutdown ends the election unless this process leads (then lead notices
// shutdown itself, returns, and only then is the Lease released). An
// acquisition in flight is let finish first: cancelling it could leave this
// process holding the Lease without knowing.
func (k *leaseLock) shutdown() {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.acquired:
	case k.inFlight:
		k.stopLater = true
	default:
		k.stop()
	}
}

func (k *leaseLock) isAcquired() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.acquired
}

// wasReleased reports whether this process, having led, released the Lease.
func (k *leaseLock) wasReleased() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.released
}

func (k *leaseLock) fatalErr() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fatal
}

// acquirable reports whether a watched Lease is free for the taking: absent,
// or released. client-go's ReleaseOnCancel writes an empty holderIdentity
// (with leaseDurationSeconds 1 and renewTime now); its acquire path takes a
// Lease with an empty holder at once, whatever its times say.
func acquirable(l *coordinationv1.Lease) bool {
	return l == nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == ""
}

// expiryMargin is how long after a held Lease's expiry, as this process
// observed it, the follower wakes to take it over.
const expiryMargin = 100 * time.Millisecond

// setWatched records the watch's view of the Lease (ok: the watch is
// connected and the view is current). While following it wakes the elector
// when the Lease became free, and also when it changed (a renewal), so that
// client-go observes the renewal now rather than at its next poll: client-go
// judges expiry from the moment it observed the last change. Each change also
// sets a timer for the moment that Lease expires, so a follower takes over a
// crashed holder's Lease within expiryMargin of its lease duration instead
// of at the next poll after it.
func (k *leaseLock) setWatched(l *coordinationv1.Lease, ok bool) {
	k.mu.Lock()
	changed := (l == nil) != (k.watched == nil) || (l != nil && l.ResourceVersion != k.watched.ResourceVersion)
	k.watched, k.watching = l, ok
	following := ok && !k.acquired
	wake := following && (acquirable(l) || changed)
	if !following || acquirable(l) || changed {
		k.stopExpiryLocked()
	}
	if following && !acquirable(l) && k.expiry == nil && l.Spec.LeaseDurationSeconds != nil {
		k.expiry = time.AfterFunc(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second+expiryMargin, k.wake)
	}
	k.mu.Unlock()
	if wake {
		k.wake()
	}
}

// stopExpiry stops the expiry timer, if one runs.
func (k *leaseLock) stopExpiry() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopExpiryLocked()
}

func (k *leaseLock) stopExpiryLocked() {
	if k.expiry != nil {
		k.expiry.Stop()
		k.expiry = nil
	}
}

// setWatching marks the watched view as usable or not.
func (k *leaseLock) setWatching(ok bool) {
	k.mu.Lock()
	l := k.watched
	k.mu.Unlock()
	k.setWatched(l, ok)
}

// Get implements resourcelock.Interface.
func (k *leaseLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	k.mu.Lock()
	if !k.acquired && k.watching {
		w := k.watched
		if w == nil {
			k.mu.Unlock()
			return nil, nil, apierrors.NewNotFound(coordinationv1.Resource("leases"), k.name)
		}
		k.lease = w.DeepCopy()
		k.mu.Unlock()
		return record(w)
	}
	k.getting = true
	k.mu.Unlock()
	l, err := k.client.Get(ctx, k.name, metav1.GetOptions{})
	k.observe("get", err)
	k.mu.Lock()
	k.getting = false
	if k.wakeLater && k.watching && !k.acquired {
		// The watch connected and saw the Lease free while this GET was
		// on its way (at startup): decide on what the watch saw.
		k.wakeLater = false
		k.mu.Unlock()
		return k.Get(ctx)
	}
	k.wakeLater = false
	if err != nil {
		k.mu.Unlock()
		return nil, nil, err
	}
	k.lease = l
	k.mu.Unlock()
	return record(l)
}

func record(l *coordinationv1.Lease) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r := resourcelock.LeaseSpecToLeaderElectionRecord(&l.Spec)
	raw, err := json.Marshal(*r)
	if err != nil {
		return nil, nil, err
	}
	return r, raw, nil
}

// Create implements resourcelock.Interface.
func (k *leaseLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: k.name, Namespace: k.namespace},
		Spec:       resourcelock.LeaderElectionRecordToLeaseSpec(&ler),
	}
	return k.write(ctx, "create", ler, func() (*coordinationv1.Lease, error) {
		return k.client.Create(ctx, l, metav1.CreateOptions{})
	})
}

// Update implements resourcelock.Interface.
func (k *leaseLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	k.mu.Lock()
	if k.lease == nil {
		k.mu.Unlock()
		return errors.New("lease not initialized, call get or create first")
	}
	l := k.lease.DeepCopy()
	k.mu.Unlock()
	l.Spec = resourcelock.LeaderElectionRecordToLeaseSpec(&ler)
	return k.write(ctx, "update", ler, func() (*coordinationv1.Lease, error) {
		return k.client.Update(ctx, l, metav1.UpdateOptions{})
	})
}

// write runs a Create or Update. Before this process leads every write is an
// acquisition attempt (client-go writes its own identity): it is marked in
// flight so that wake and shutdown wait for its outcome, and it is not sent
// at all if its attempt was cancelled already.
func (k *leaseLock) write(ctx context.Context, verb string, ler resourcelock.LeaderElectionRecord, call func() (*coordinationv1.Lease, error)) error {
	k.mu.Lock()
	acquiring := !k.acquired
	if acquiring {
		if err := ctx.Err(); err != nil {
			k.mu.Unlock()
			return err
		}
		k.inFlight = true
	}
	k.mu.Unlock()

	l, err := call()

	k.mu.Lock()
	var acquiredNow func()
	if err == nil {
		k.lease = l
	}
	if !acquiring && ler.HolderIdentity == "" {
		k.released = err == nil
	}
	if acquiring {
		k.inFlight = false
		switch {
		case err == nil && ler.HolderIdentity == k.identity:
			k.acquired = true
			acquiredNow = k.onAcquire
		case err != nil && k.stopLater:
			k.stop()
		case err != nil && k.wakeLater && k.cancel != nil:
			k.cancel()
		}
		k.wakeLater, k.stopLater = false, false
	}
	k.mu.Unlock()
	k.observe(verb, err)
	if acquiredNow != nil {
		acquiredNow()
	}
	return err
}

// observe classifies the outcome of an API call on the Lease.
func (k *leaseLock) observe(verb string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !apierrors.IsForbidden(err) {
		k.deniedAt = time.Time{}
		if apierrors.IsUnauthorized(err) && !k.denied["unauthorized"] {
			k.denied["unauthorized"] = true
			k.log.Error("the API server does not accept this process's credentials (401 Unauthorized): check the ServiceAccount token or kubeconfig", "err", err)
		}
		return
	}
	if !k.denied[verb] {
		k.denied[verb] = true
		k.log.Error(fmt.Sprintf("RBAC forbids %s on %s: grant get and update on this Lease and create on leases to this process's ServiceAccount (or user) in a Role in that namespace", verb, k.leaseResource()),
			"verb", verb, "resource", "leases.coordination.k8s.io", "err", err)
	}
	now := k.clock.Now()
	if k.deniedAt.IsZero() {
		k.deniedAt = now
	}
	if k.acquired || k.fatal != nil || k.forbiddenTimeout < 0 || now.Sub(k.deniedAt) < k.forbiddenTimeout {
		return
	}
	// A follower that was refused everything for this long will not lead
	// before someone fixes RBAC: say so by ending Run with an error (the
	// process exits 1 and the restart makes the problem visible) instead of
	// waiting silently.
	k.fatal = fmt.Errorf("giving up on %s after %s of 403 Forbidden: RBAC forbids %s: %w", k.leaseResource(), now.Sub(k.deniedAt).Round(time.Millisecond), verb, err)
	k.stop()
}

// RecordEvent implements resourcelock.Interface.
func (k *leaseLock) RecordEvent(s string) {
	if k.events == nil {
		return
	}
	k.mu.Lock()
	meta := metav1.ObjectMeta{Name: k.name, Namespace: k.namespace}
	if k.lease != nil {
		meta = *k.lease.ObjectMeta.DeepCopy()
	}
	k.mu.Unlock()
	subject := &coordinationv1.Lease{ObjectMeta: meta}
	subject.Kind = "Lease"
	subject.APIVersion = coordinationv1.SchemeGroupVersion.String()
	k.events.Eventf(subject, corev1.EventTypeNormal, "LeaderElection", "%s", k.identity+" "+s)
}

// Identity implements resourcelock.Interface.
func (k *leaseLock) Identity() string { return k.identity }

// Describe implements resourcelock.Interface.
func (k *leaseLock) Describe() string { return k.namespace + "/" + k.name }
