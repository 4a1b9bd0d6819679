package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
)

// LeaseConfig configures a Lease elector. Durations left zero take the
// defaults of client-go's leader election.
type LeaseConfig struct {
	// Client reaches the Lease's namespace: get, create and update the
	// Lease, and list and watch it (selecting metadata.name) so that a
	// follower notices a release at once (see the package comment).
	Client LeaseClient
	// Namespace and Name locate the Lease.
	Namespace, Name string
	// Identity is this process's holder identity (the Pod name in a cluster).
	Identity string
	// LeaseDuration is how long followers wait after the last renewal they
	// saw before taking over a lease. Default 15s.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps retrying to renew before it
	// gives up leadership. Default 10s.
	RenewDeadline time.Duration
	// RetryPeriod is the wait between attempts to acquire or renew. Default 2s.
	RetryPeriod time.Duration
	// Events, if set, records leadership changes as Kubernetes Events.
	Events EventRecorder
	// ForbiddenTimeout is how long a follower keeps trying while the API
	// server answers every request on the Lease with 403 Forbidden before
	// Run gives up and returns the error. Default 1m (DefaultForbiddenTimeout);
	// negative: never give up.
	ForbiddenTimeout time.Duration
	// Log receives leadership changes.
	Log *slog.Logger
}

// Lease timing defaults, client-go's.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second

	// DefaultForbiddenTimeout is the default LeaseConfig.ForbiddenTimeout.
	DefaultForbiddenTimeout = time.Minute

	// JitterFactor spreads a polling follower's attempts over
	// [RetryPeriod, (1+JitterFactor)·RetryPeriod], as client-go does.
	JitterFactor = 1.2
)

// ValidateTimings checks client-go's invariants: every duration positive and
// LeaseDuration > RenewDeadline > JitterFactor × RetryPeriod; and that
// LeaseDuration is whole seconds, as the Lease stores it. The messages name
// flags.
func ValidateTimings(lease, renew, retry time.Duration) error {
	switch {
	case lease <= 0:
		return fmt.Errorf("--lease-duration must be positive (got %s)", lease)
	case renew <= 0:
		return fmt.Errorf("--renew-deadline must be positive (got %s)", renew)
	case retry <= 0:
		return fmt.Errorf("--retry-period must be positive (got %s)", retry)
	case lease%time.Second != 0:
		return fmt.Errorf("--lease-duration must be a whole number of seconds, as a Lease records it (got %s)", lease)
	case renew >= lease:
		return fmt.Errorf("--renew-deadline (%s) must be below --lease-duration (%s): a leader must give up before followers may take over", renew, lease)
	case float64(renew) <= JitterFactor*float64(retry):
		return fmt.Errorf("--renew-deadline (%s) must be above %.1f × --retry-period (%s): lower --retry-period or raise --renew-deadline", renew, JitterFactor, retry)
	}
	return nil
}

// Lease elects the holder of a coordination.k8s.io Lease (see the package
// comment).
type Lease struct {
	cfg   LeaseConfig
	clock clock.PassiveClock // times ForbiddenTimeout; a fake in tests

	healthMu  sync.Mutex // guards leading and renewedAt, which Healthy reads (an election has its own mu)
	leading   bool
	renewedAt time.Time // when the leader last wrote the Lease
}

// NewLease validates cfg and returns a Lease elector.
func NewLease(cfg LeaseConfig) (*Lease, error) {
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if cfg.ForbiddenTimeout == 0 {
		cfg.ForbiddenTimeout = DefaultForbiddenTimeout
	}
	if err := ValidateTimings(cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod); err != nil {
		return nil, err
	}
	switch {
	case cfg.Client == nil:
		return nil, errors.New("lease elector needs a Kubernetes client")
	case cfg.Name == "" || cfg.Namespace == "":
		return nil, errors.New("lease elector needs a lease name and namespace")
	case cfg.Identity == "":
		return nil, errors.New("lease elector needs an identity")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Lease{cfg: cfg, clock: clock.RealClock{}}, nil
}

// Identity implements Elector.
func (l *Lease) Identity() string { return l.cfg.Identity }

// Scope implements Elector.
func (l *Lease) Scope() string { return "lease:" + l.cfg.Namespace + "/" + l.cfg.Name }

// Healthy implements Elector: a leader that has not renewed its Lease for
// LeaseDuration + RenewDeadline is unhealthy (it should have given up by
// then), so the kubelet restarts it. client-go's HealthzAdaptor does the same.
func (l *Lease) Healthy() error {
	l.healthMu.Lock()
	defer l.healthMu.Unlock()
	if !l.leading {
		return nil
	}
	if since := time.Since(l.renewedAt); since > l.cfg.LeaseDuration+l.cfg.RenewDeadline {
		return fmt.Errorf("leading, but the Lease was last renewed %s ago (lease duration %s)", since.Round(time.Millisecond), l.cfg.LeaseDuration)
	}
	return nil
}

func (l *Lease) setLeading(leading bool, renewedAt time.Time) {
	l.healthMu.Lock()
	defer l.healthMu.Unlock()
	l.leading = leading
	if !renewedAt.IsZero() {
		l.renewedAt = renewedAt
	}
}

// Run implements Elector. The lease is released only after lead returns.
// A follower refused with 403 Forbidden on every request for
// ForbiddenTimeout returns that error (apierrors.IsForbidden holds; the
// message names the verb and the Lease) instead of waiting forever.
func (l *Lease) Run(ctx context.Context, lead func(context.Context) error) error {
	e := &election{
		Lease:  l,
		log:    l.cfg.Log.With("lease", l.cfg.Namespace+"/"+l.cfg.Name, "identity", l.cfg.Identity),
		wake:   make(chan struct{}, 1),
		denied: map[string]bool{},
	}
	defer e.events.Wait()
	e.log.Info("waiting for the lease")
	acquired, err := e.follow(ctx)
	if err != nil {
		e.log.Error("giving up: this process is not allowed to take the lease", "err", err)
		return err
	}
	if !acquired {
		return nil // shut down before ever leading
	}
	return e.lead(ctx, lead)
}

// election is the state of one Run.
type election struct {
	*Lease
	log    *slog.Logger
	wake   chan struct{} // a follower should try to acquire now
	events sync.WaitGroup

	mu         sync.Mutex
	lease      *coordinationv1.Lease    // as the leader last wrote or read it (nil until acquired); its resourceVersion guards Update
	observed   coordinationv1.LeaseSpec // the last spec seen ...
	observedAt time.Time                // ... and when it was first seen, by this process's clock
	watched    *coordinationv1.Lease    // the follower's view from the watch; nil: no such Lease
	watching   bool                     // the watch is connected: reads are answered from watched ...
	watchStale bool                     // ... unless a write based on it met a newer Lease: then by GET until the watch shows a change
	expiry     *time.Timer              // wakes the follower when the watched Lease expires
	denied     map[string]bool          // verbs whose 403 was logged
	deniedAt   time.Time                // first of an unbroken run of 403s; zero: none
	fatal      error                    // why a follower gave up
}

func (e *election) leaseResource() string {
	return fmt.Sprintf("leases.coordination.k8s.io %q in namespace %q", e.cfg.Name, e.cfg.Namespace)
}

// poke makes a waiting follower try to acquire at once.
func (e *election) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// follow tries to acquire the Lease until it does (true), ctx ends (false)
// or this process gave up (the error). It tries at once, then whenever the
// watch sees the Lease free, changed or expired, and at least every
// RetryPeriod (with client-go's jitter) while the watch is down.
//
// An attempt runs to its end even when ctx ends meanwhile: cancelling a
// Create or Update could leave this process holding the Lease without
// knowing. If it won, this process leads (lead sees shutdown and returns at
// once) and then releases the Lease.
func (e *election) follow(ctx context.Context) (bool, error) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		e.watchLease(watchCtx)
	}()
	defer func() {
		stopWatch()
		<-watchDone
		e.setWatching(false)
	}()
	for {
		if e.tryAcquire(ctx) {
			return true, nil
		}
		if err := e.fatalErr(); err != nil {
			return false, err
		}
		wait := e.cfg.RetryPeriod + time.Duration(rand.Float64()*JitterFactor*float64(e.cfg.RetryPeriod))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, nil
		case <-e.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// tryAcquire makes one attempt to take the Lease, as client-go's
// tryAcquireOrRenew does: create it if absent; take it if it is released
// (no holder), expired (unchanged for its duration, as this process saw it)
// or already names this process (a restarted container of the same Pod).
//
// What it read is dated when the read returned, as client-go dates its
// observedTime after its Get: a slow GET that brings a fresh renewal must
// not make that renewal look older than it is.
func (e *election) tryAcquire(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.RenewDeadline)
	defer cancel()
	cur, fromWatch, err := e.get(ctx)
	now := time.Now()
	if apierrors.IsNotFound(err) {
		created, err := e.cfg.Client.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: e.cfg.Name, Namespace: e.cfg.Namespace},
			Spec:       e.acquireSpec(nil, now),
		}, metav1.CreateOptions{})
		return e.acquired("create", created, err, fromWatch)
	}
	if err != nil {
		e.failed("get", err)
		return false
	}
	e.mu.Lock()
	e.observeLocked(cur, now)
	held := holderOf(cur) != "" && holderOf(cur) != e.cfg.Identity && e.validLocked(now)
	e.mu.Unlock()
	if held {
		return false
	}
	next := cur.DeepCopy()
	next.Spec = e.acquireSpec(cur, now)
	updated, err := e.cfg.Client.Update(ctx, next, metav1.UpdateOptions{})
	return e.acquired("update", updated, err, fromWatch)
}

// get reads the Lease: from the watch while it is connected and trusted
// (fromWatch), else from the API server.
func (e *election) get(ctx context.Context) (l *coordinationv1.Lease, fromWatch bool, err error) {
	e.mu.Lock()
	if e.watching && !e.watchStale {
		w := e.watched
		e.mu.Unlock()
		if w == nil {
			return nil, true, apierrors.NewNotFound(coordinationv1.Resource("leases"), e.cfg.Name)
		}
		return w.DeepCopy(), true, nil
	}
	e.mu.Unlock()
	l, err = e.cfg.Client.Get(ctx, e.cfg.Name, metav1.GetOptions{})
	e.observeErr("get", err)
	return l, false, err
}

// acquireSpec is the spec of a Lease this process takes over from old (nil:
// creates). It keeps the acquire time and count of transitions when old
// names this process already, and counts one more transition otherwise.
func (e *election) acquireSpec(old *coordinationv1.Lease, now time.Time) coordinationv1.LeaseSpec {
	t := metav1.NewMicroTime(now)
	id, seconds, transitions := e.cfg.Identity, int32(e.cfg.LeaseDuration/time.Second), int32(0)
	spec := coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &seconds, AcquireTime: &t, RenewTime: &t}
	if old != nil {
		spec.Strategy, spec.PreferredHolder = old.Spec.Strategy, old.Spec.PreferredHolder
		if old.Spec.LeaseTransitions != nil {
			transitions = *old.Spec.LeaseTransitions
		}
		if holderOf(old) == id && old.Spec.AcquireTime != nil {
			spec.AcquireTime = old.Spec.AcquireTime.DeepCopy()
		} else {
			transitions++
		}
	}
	spec.LeaseTransitions = &transitions
	return spec
}

// acquired records the outcome of an acquiring Create or Update. A write
// based on the watched copy that meets a newer Lease (409 Conflict, or
// AlreadyExists on create) shows the watch is behind, or silent while it
// stays open: reads go to the API server from then on, until the watch
// delivers a change, and the follower tries again at once on a fresh copy.
func (e *election) acquired(verb string, l *coordinationv1.Lease, err error, fromWatch bool) bool {
	e.observeErr(verb, err)
	if err != nil {
		e.failed(verb, err)
		if fromWatch && (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
			e.mu.Lock()
			e.watchStale = true
			e.mu.Unlock()
			e.poke()
		}
		return false
	}
	e.mu.Lock()
	e.lease = l
	e.observeLocked(l, time.Now())
	e.mu.Unlock()
	return true
}

// failed logs a failed attempt to acquire. Losing a race for a released
// Lease (409 Conflict, or AlreadyExists on create) is the election working;
// 401 and 403 were logged once by observeErr.
func (e *election) failed(verb string, err error) {
	switch {
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		e.log.Debug("another process took the lease first", "verb", verb, "err", err)
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
	default:
		e.log.Error(fmt.Sprintf("cannot %s the lease", verb), "err", err)
	}
}

// observeLocked notes l's spec and, if it differs from the last one seen,
// the time: a holder's Lease expires LeaseDurationSeconds after this
// process last saw it change, by this process's clock, so the clocks of
// the holder and the API server do not matter (client-go's rule).
func (e *election) observeLocked(l *coordinationv1.Lease, now time.Time) {
	if e.observedAt.IsZero() || !apiequality.Semantic.DeepEqual(l.Spec, e.observed) {
		e.observed, e.observedAt = *l.Spec.DeepCopy(), now
	}
}

// validLocked reports whether the last Lease seen has not expired.
func (e *election) validLocked(now time.Time) bool {
	if e.observed.LeaseDurationSeconds == nil {
		return false
	}
	return now.Before(e.observedAt.Add(time.Duration(*e.observed.LeaseDurationSeconds) * time.Second))
}

func holderOf(l *coordinationv1.Lease) string {
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// lead runs lead while renewing the Lease every RetryPeriod. A renewal that
// has not succeeded within RenewDeadline, or a Lease that names another
// holder, ends leadership: lead's context is cancelled and Run returns
// ErrLeadershipLost once lead has returned. When lead returns on its own the
// Lease is released, so a follower takes over at once.
func (e *election) lead(ctx context.Context, lead func(context.Context) error) error {
	e.setLeading(true, time.Now())
	defer e.setLeading(false, time.Time{})
	e.log.Info("acquired the lease: leading")
	e.event("became leader")

	// Shutdown does not cancel lead's context: lead notices it itself.
	leaderCtx, lose := context.WithCancel(context.WithoutCancel(ctx))
	defer lose()
	leadDone := make(chan error, 1)
	go func() { leadDone <- lead(leaderCtx) }()
	for {
		t := time.NewTimer(e.cfg.RetryPeriod)
		select {
		case err := <-leadDone:
			t.Stop()
			e.release()
			return err
		case <-t.C:
		}
		if why := e.renew(); why != "" {
			lose()
			err := <-leadDone
			e.log.Error("lost the lease: " + why)
			e.event("stopped leading")
			if err != nil {
				return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
			}
			return ErrLeadershipLost
		}
	}
}

// renew renews the Lease, retrying every RetryPeriod for up to
// RenewDeadline. It returns why it failed, or "" once renewed.
func (e *election) renew() string {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	for {
		now := time.Now()
		e.mu.Lock()
		next := e.lease.DeepCopy()
		e.mu.Unlock()
		id, seconds, t := e.cfg.Identity, int32(e.cfg.LeaseDuration/time.Second), metav1.NewMicroTime(now)
		next.Spec.HolderIdentity, next.Spec.LeaseDurationSeconds, next.Spec.RenewTime = &id, &seconds, &t
		updated, err := e.cfg.Client.Update(ctx, next, metav1.UpdateOptions{})
		e.observeErr("update", err)
		switch {
		case err == nil:
			e.mu.Lock()
			e.lease = updated
			e.observeLocked(updated, now)
			e.mu.Unlock()
			e.setLeading(true, now)
			return ""
		case apierrors.IsNotFound(err):
			return "the Lease was deleted"
		case apierrors.IsConflict(err):
			// Someone else wrote the Lease: read it. If it still names
			// this process, the next attempt writes on the fresh copy.
			cur, gerr := e.cfg.Client.Get(ctx, e.cfg.Name, metav1.GetOptions{})
			e.observeErr("get", gerr)
			if gerr != nil {
				err = gerr
				break
			}
			if h := holderOf(cur); h != e.cfg.Identity {
				return fmt.Sprintf("%q holds it now", h)
			}
			e.mu.Lock()
			e.lease = cur
			e.mu.Unlock()
		}
		e.log.Warn("cannot renew the lease", "err", err)
		t2 := time.NewTimer(e.cfg.RetryPeriod)
		select {
		case <-ctx.Done():
			t2.Stop()
			return fmt.Sprintf("could not renew it within the renew deadline (%s)", e.cfg.RenewDeadline)
		case <-t2.C:
		}
	}
}

// release gives up the Lease the way client-go's ReleaseOnCancel does: no
// holder, a duration of one second, renewed now. A refused write (409
// Conflict: something else wrote the Lease since the last renewal; or any
// other error) is tried again on a fresh copy read with a GET, at most
// releaseAttempts times within RenewDeadline, and only while that copy still
// names this process: a follower then takes over at once instead of a lease
// duration later.
func (e *election) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	e.mu.Lock()
	cur := e.lease.DeepCopy()
	e.mu.Unlock()
	err := e.releaseFrom(ctx, cur)
	e.event("stopped leading")
	switch {
	case errors.Is(err, errNotOurs):
		e.log.Info("not releasing the lease: " + err.Error())
	case err != nil:
		e.log.Warn("could not release the lease: a follower takes over once it expires", "lease_duration", e.cfg.LeaseDuration, "err", err)
	default:
		e.log.Info("released the lease")
	}
}

// releaseAttempts bounds the writes of one release.
const releaseAttempts = 3

// errNotOurs ends a release that found the Lease held by another process.
var errNotOurs = errors.New("another process holds it now")

// releaseFrom writes the release on cur, re-reading and retrying as release
// describes.
func (e *election) releaseFrom(ctx context.Context, cur *coordinationv1.Lease) error {
	for attempt := 1; ; attempt++ {
		next := cur.DeepCopy()
		none, one, t := "", int32(1), metav1.NewMicroTime(time.Now())
		next.Spec.HolderIdentity, next.Spec.LeaseDurationSeconds, next.Spec.AcquireTime, next.Spec.RenewTime = &none, &one, &t, &t
		_, err := e.cfg.Client.Update(ctx, next, metav1.UpdateOptions{})
		e.observeErr("update", err)
		if err == nil || apierrors.IsNotFound(err) {
			return err
		}
		if attempt == releaseAttempts {
			return fmt.Errorf("release, %d attempts: %w", attempt, err)
		}
		if !apierrors.IsConflict(err) {
			// Not a newer Lease but a failed request: pause before the
			// next attempt, within the deadline.
			t := time.NewTimer(e.cfg.RetryPeriod / 2)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("release: %w", err)
			case <-t.C:
			}
		}
		fresh, gerr := e.cfg.Client.Get(ctx, e.cfg.Name, metav1.GetOptions{})
		e.observeErr("get", gerr)
		if gerr != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("release: %w (then: %w)", err, gerr)
			}
			continue // try again on the copy we have
		}
		if h := holderOf(fresh); h != e.cfg.Identity {
			return fmt.Errorf("%w (holder %q)", errNotOurs, h)
		}
		cur = fresh
	}
}

// event records a leadership change as an Event, in the background; Run
// waits for it before it returns.
func (e *election) event(change string) {
	if e.cfg.Events == nil {
		return
	}
	e.mu.Lock()
	lease := e.lease.DeepCopy()
	e.mu.Unlock()
	e.events.Add(1)
	go func() {
		defer e.events.Done()
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		defer cancel()
		if err := e.cfg.Events.LeaderEvent(ctx, lease, e.cfg.Identity, change); err != nil {
			e.log.Warn("cannot record an Event", "err", err)
		}
	}()
}

// eventTimeout bounds the wait for an Event to be recorded.
const eventTimeout = 2 * time.Second

func (e *election) fatalErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fatal
}

// observeErr classifies the outcome of an API call on the Lease: 401 and
// each verb's 403 are logged once, naming what to fix; a follower refused
// with 403 for ForbiddenTimeout gives up.
func (e *election) observeErr(verb string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !apierrors.IsForbidden(err) {
		e.deniedAt = time.Time{}
		if apierrors.IsUnauthorized(err) && !e.denied["unauthorized"] {
			e.denied["unauthorized"] = true
			e.log.Error("the API server does not accept this process's credentials (401 Unauthorized): check the ServiceAccount token or kubeconfig", "err", err)
		}
		return
	}
	if !e.denied[verb] {
		e.denied[verb] = true
		e.log.Error(fmt.Sprintf("RBAC forbids %s on %s: grant get and update on this Lease and create on leases to this process's ServiceAccount (or user) in a Role in that namespace", verb, e.leaseResource()),
			"verb", verb, "resource", "leases.coordination.k8s.io", "err", err)
	}
	now := e.clock.Now()
	if e.deniedAt.IsZero() {
		e.deniedAt = now
	}
	if e.lease != nil /* leading */ || e.fatal != nil || e.cfg.ForbiddenTimeout < 0 || now.Sub(e.deniedAt) < e.cfg.ForbiddenTimeout {
		return
	}
	// A follower that was refused everything for this long will not lead
	// before someone fixes RBAC: say so by ending Run with an error (the
	// process exits 1 and the restart makes the problem visible) instead of
	// waiting silently.
	e.fatal = fmt.Errorf("giving up on %s after %s of 403 Forbidden: RBAC forbids %s: %w", e.leaseResource(), now.Sub(e.deniedAt).Round(time.Millisecond), verb, err)
}
