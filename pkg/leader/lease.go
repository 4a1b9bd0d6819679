package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// LeaseConfig configures a Lease elector. Durations left zero take the
// defaults client-go's examples use.
type LeaseConfig struct {
	// Client reaches the coordination.k8s.io API: get, create and update
	// the Lease, and list and watch it (selecting metadata.name) so that a
	// follower notices a release at once (see the package comment).
	Client coordinationv1client.LeasesGetter
	// Namespace and Name locate the Lease.
	Namespace, Name string
	// Identity is this process's holder identity (the Pod name in a cluster).
	Identity string
	// LeaseDuration is how long followers wait after the last renewal before
	// taking over a lease. Default 15s.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps retrying to renew before it
	// gives up leadership. Default 10s.
	RenewDeadline time.Duration
	// RetryPeriod is the wait between attempts to acquire or renew. Default 2s.
	RetryPeriod time.Duration
	// Events, if set, records leadership changes as Kubernetes Events.
	Events resourcelock.EventRecorder
	// ForbiddenTimeout is how long a follower keeps trying while the API
	// server answers every request on the Lease with 403 Forbidden before
	// Run gives up and returns the error. Default 1m (DefaultForbiddenTimeout);
	// negative: never give up.
	ForbiddenTimeout time.Duration
	// Log receives leadership changes.
	Log *slog.Logger
}

// Lease timing defaults.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second

	// DefaultForbiddenTimeout is the default LeaseConfig.ForbiddenTimeout.
	DefaultForbiddenTimeout = time.Minute
)

// ValidateTimings checks client-go's invariants: every duration positive and
// LeaseDuration > RenewDeadline > 1.2 × RetryPeriod. The messages name flags.
func ValidateTimings(lease, renew, retry time.Duration) error {
	switch {
	case lease <= 0:
		return fmt.Errorf("--lease-duration must be positive (got %s)", lease)
	case renew <= 0:
		return fmt.Errorf("--renew-deadline must be positive (got %s)", renew)
	case retry <= 0:
		return fmt.Errorf("--retry-period must be positive (got %s)", retry)
	case renew >= lease:
		return fmt.Errorf("--renew-deadline (%s) must be below --lease-duration (%s): a leader must give up before followers may take over", renew, lease)
	case float64(renew) <= leaderelection.JitterFactor*float64(retry):
		return fmt.Errorf("--renew-deadline (%s) must be above %.1f × --retry-period (%s): lower --retry-period or raise --renew-deadline", renew, leaderelection.JitterFactor, retry)
	}
	return nil
}

// Lease elects the holder of a coordination.k8s.io Lease with client-go's
// LeaderElector; while following it also watches the Lease and takes a
// released one at once (see the package comment).
type Lease struct {
	cfg     LeaseConfig
	healthz *leaderelection.HealthzAdaptor
	clock   clock.PassiveClock // times ForbiddenTimeout; a fake in tests
	onLock  func(*leaseLock)   // tests: observe the lock Run builds
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
	// A leader that has not renewed for this long past its lease reports
	// unhealthy, so the kubelet restarts it.
	return &Lease{cfg: cfg, healthz: leaderelection.NewLeaderHealthzAdaptor(cfg.RenewDeadline), clock: clock.RealClock{}}, nil
}

// Identity implements Elector.
func (l *Lease) Identity() string { return l.cfg.Identity }

// Scope implements Elector.
func (l *Lease) Scope() string { return "lease:" + l.cfg.Namespace + "/" + l.cfg.Name }

// Healthy implements Elector.
func (l *Lease) Healthy() error { return l.healthz.Check(nil) }

// Run implements Elector. The lease is released only after lead returns.
// A follower refused with 403 Forbidden on every request for
// ForbiddenTimeout returns that error (apierrors.IsForbidden holds; the
// message names the verb and the Lease) instead of waiting forever.
func (l *Lease) Run(ctx context.Context, lead func(context.Context) error) error {
	log := l.cfg.Log.With("lease", l.cfg.Namespace+"/"+l.cfg.Name, "identity", l.cfg.Identity)
	// The election runs on its own context, cancelled once lead has
	// returned (or, when not leading, once ctx ends): cancelling it is what
	// makes client-go release the lease.
	election, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	// The watch lives while this process follows.
	following, stopFollowing := context.WithCancel(election)
	defer stopFollowing()

	var (
		mu      sync.Mutex
		lost    bool
		leadErr error
	)
	leadDone := make(chan struct{})
	lock := &leaseLock{
		client:    l.cfg.Client.Leases(l.cfg.Namespace),
		namespace: l.cfg.Namespace, name: l.cfg.Name, identity: l.cfg.Identity,
		events: l.cfg.Events, log: log, clock: l.clock, forbiddenTimeout: l.cfg.ForbiddenTimeout,
		stop: stopElection, onAcquire: stopFollowing,
		denied: map[string]bool{},
	}
	if l.onLock != nil {
		l.onLock(lock)
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   l.cfg.LeaseDuration,
		RenewDeadline:   l.cfg.RenewDeadline,
		RetryPeriod:     l.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            l.cfg.Name,
		WatchDog:        l.healthz,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaderCtx context.Context) {
				log.Info("acquired the lease: leading")
				err := lead(leaderCtx)
				mu.Lock()
				leadErr = err
				// client-go cancels leaderCtx itself only when renewal fails.
				lost = leaderCtx.Err() != nil && election.Err() == nil
				mu.Unlock()
				close(leadDone)
				stopElection()
			},
			// client-go calls this whenever its Run returns, whether or
			// not we ever led; Run below decides what happened.
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("lease elector: %w", err)
	}
	l.healthz.SetLeaderElection(le)

	go lock.watchLease(following, l.cfg.RetryPeriod)
	go func() {
		select {
		case <-ctx.Done():
			lock.shutdown() // stop waiting to acquire, unless leading
		case <-election.Done():
		}
	}()
	// client-go logs every pass's start ("Attempting to acquire leader
	// lease") and its own view of leadership at info level; a follower starts
	// a pass on every renewal it sees, and this package logs leadership
	// itself, so client-go's info lines go to debug. Its errors stay errors.
	clientGoLog := logr.FromSlogHandler(demoteInfo{log.With("source", "client-go").Handler()})
	log.Info("waiting for the lease")
	for {
		// Each pass is one client-go acquire loop (its first attempt is
		// immediate). A wake-up from the watch ends the pass while it
		// waits for its next RetryPeriod tick; once the lease is acquired
		// the pass goes on renewing until lead returns or renewal fails.
		attempt, cancelAttempt := context.WithCancel(election)
		lock.beginAttempt(cancelAttempt)
		le.Run(klog.NewContext(attempt, clientGoLog))
		cancelAttempt()
		if lock.isAcquired() || election.Err() != nil {
			break
		}
	}
	stopFollowing()
	lock.stopExpiry()

	if !lock.isAcquired() {
		if err := lock.fatalErr(); err != nil {
			log.Error("giving up: this process is not allowed to take the lease", "err", err)
			return err
		}
		return nil // shut down before ever leading
	}
	// client-go's Run returned: either lead finished and we released the
	// lease, or renewal failed and client-go cancelled lead's context. Wait
	// for lead either way (client-go starts it whenever it acquired), so no
	// work outlives leadership.
	<-leadDone
	mu.Lock()
	defer mu.Unlock()
	if lost {
		log.Error("lost the lease: could not renew it within the renew deadline")
		if leadErr != nil {
			return fmt.Errorf("%w: %w", ErrLeadershipLost, leadErr)
		}
		return ErrLeadershipLost
	}
	if lock.wasReleased() {
		log.Info("released the lease")
	} else {
		log.Warn("could not release the lease: a follower takes over once it expires", "lease_duration", l.cfg.LeaseDuration)
	}
	return leadErr
}

// demoteInfo passes errors (and warnings) on and turns everything below them
// into debug records, and also the errors that are 409 Conflicts: followers
// racing for a released Lease lose with one, which is the election working.
type demoteInfo struct{ slog.Handler }

func (d demoteInfo) Enabled(ctx context.Context, l slog.Level) bool {
	return d.Handler.Enabled(ctx, demote(l))
}

func (d demoteInfo) Handle(ctx context.Context, r slog.Record) error {
	if conflict(r) {
		r.Level = slog.LevelDebug
	}
	r.Level = demote(r.Level)
	return d.Handler.Handle(ctx, r)
}

// conflict reports whether r carries an error that is a 409 Conflict.
func conflict(r slog.Record) (found bool) {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && apierrors.IsConflict(err) {
			found = true
		}
		return !found
	})
	return found
}

func (d demoteInfo) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteInfo{d.Handler.WithAttrs(as)}
}
func (d demoteInfo) WithGroup(n string) slog.Handler { return demoteInfo{d.Handler.WithGroup(n)} }

func demote(l slog.Level) slog.Level {
	if l < slog.LevelWarn {
		return slog.LevelDebug
	}
	return l
}
