package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseConfig configures a Lease elector. Durations left zero take the
// defaults client-go's examples use.
type LeaseConfig struct {
	// Client reaches the coordination.k8s.io API.
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
	// Log receives leadership changes.
	Log *slog.Logger
}

// Lease timing defaults.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
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

// Lease elects the holder of a coordination.k8s.io Lease.
type Lease struct {
	cfg     LeaseConfig
	healthz *leaderelection.HealthzAdaptor
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
	return &Lease{cfg: cfg, healthz: leaderelection.NewLeaderHealthzAdaptor(cfg.RenewDeadline)}, nil
}

// Identity implements Elector.
func (l *Lease) Identity() string { return l.cfg.Identity }

// Scope implements Elector.
func (l *Lease) Scope() string { return "lease:" + l.cfg.Namespace + "/" + l.cfg.Name }

// Healthy implements Elector.
func (l *Lease) Healthy() error { return l.healthz.Check(nil) }

// Run implements Elector. The lease is released only after lead returns.
func (l *Lease) Run(ctx context.Context, lead func(context.Context) error) error {
	log := l.cfg.Log.With("lease", l.cfg.Namespace+"/"+l.cfg.Name, "identity", l.cfg.Identity)
	// The election runs on its own context, cancelled once lead has
	// returned (or, when not leading, once ctx ends): cancelling it is what
	// makes client-go release the lease.
	election, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()

	var (
		mu      sync.Mutex
		leading bool
		lost    bool
		leadErr error
	)
	leadDone := make(chan struct{})
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: l.cfg.Namespace, Name: l.cfg.Name},
		Client:     l.cfg.Client,
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.cfg.Identity, EventRecorder: l.cfg.Events},
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
				mu.Lock()
				leading = true
				mu.Unlock()
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
			// client-go calls this whether or not we ever led; Run below
			// decides what happened.
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("lease elector: %w", err)
	}
	l.healthz.SetLeaderElection(le)

	go func() {
		select {
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			if !leading {
				stopElection() // stop waiting to acquire
			}
		case <-election.Done():
		}
	}()
	log.Info("waiting for the lease")
	le.Run(election)

	mu.Lock()
	led := leading
	mu.Unlock()
	if !led {
		return nil // shut down before ever leading
	}
	// Run returned: either lead finished and we released the lease, or
	// renewal failed and client-go cancelled lead's context. Wait for lead
	// either way, so no work outlives leadership.
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
	log.Info("released the lease")
	return leadErr
}
