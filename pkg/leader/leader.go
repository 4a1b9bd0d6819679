// Package leader elects one leader among the replicas of leasecron.
//
// Two electors share one small interface, so the rest of the program does not
// know which one it has:
//
//   - Lease uses client-go's leaderelection with a coordination.k8s.io Lease.
//     It is for Kubernetes: replicas on any node compete, a holder that stops
//     renewing loses the lease after LeaseDuration, and a holder that shuts
//     down releases it so a follower takes over at once.
//   - FileLock uses an exclusive flock(2) on a file. It guards one host only:
//     processes on other machines (or with another lock file) do not see it.
//     The kernel drops the lock when the holder's process ends, however it
//     ends, and a waiting process takes over within milliseconds.
//
// # Fast handover with a Lease
//
// client-go's LeaderElector polls: a follower notices a released Lease only at
// its next RetryPeriod tick, and the elector has no "try now" hook. So a
// follower also watches the one Lease (a list and a watch selecting
// metadata.name, resumed from the last resourceVersion) and Run drives
// client-go's loop in passes: each pass is LeaderElector.Run on a context of
// its own, and its first acquire attempt is immediate. When the watch sees the
// Lease released (an empty holderIdentity: what client-go's ReleaseOnCancel
// writes, together with leaseDurationSeconds 1) or deleted, the pass is
// cancelled and the next one starts at once. A pass is cancelled only between
// attempts, never while an acquiring Create/Update is in flight or after one
// succeeded, so leadership never starts on a dead context; shutdown waits for
// an in-flight acquisition the same way.
//
// While the watch is connected, the elector's reads are answered from the
// watched object instead of a GET. The object carries its resourceVersion, so
// an Update based on a stale copy fails with a conflict: a stale view can delay
// a takeover, not make a wrong one. A follower's API traffic is then one long
// watch request instead of a GET per RetryPeriod, and the expiry of a crashed
// holder's Lease is judged by client-go exactly as before (no change seen for
// leaseDurationSeconds). When the watch cannot be established (RBAC without
// list/watch, an old server, an outage) the follower logs one warning, polls
// like plain client-go and retries the watch with a capped backoff. The leader
// neither watches nor reads from the watch: it renews with client-go's calls.
//
// RBAC for the Lease: get, update, list and watch on the named Lease (list and
// watch honour resourceNames because the requests select metadata.name) and
// create on leases. A follower refused with 403 on every request for
// LeaseConfig.ForbiddenTimeout stops waiting: Run returns the error, which
// names the verb, so the process exits non-zero instead of idling forever.
//
// Neither gives fencing: a process can believe it leads for a moment after it
// stopped (a GC pause, a frozen process, a partition). The ledger in package
// jobs is what makes a slot run once even then; an elector only keeps the
// scheduler on one process almost all the time.
//
// Run's contract: lead is called when this process becomes leader, with a
// context cancelled the moment leadership is lost. Shutdown (the ctx given to
// Run ending) does not cancel it: lead is expected to notice shutdown itself,
// finish or abandon its work, and return; only then is leadership released.
// So a lease is never released while a job still runs.
package leader

import (
	"context"
	"errors"
)

// ErrLeadershipLost is returned by Run when this process stopped leading
// without being asked to: the lease could not be renewed in time.
var ErrLeadershipLost = errors.New("leadership lost")

// Elector elects a leader.
type Elector interface {
	// Run blocks until ctx ends or leadership is lost. While this process
	// leads it runs lead (see the package comment for the contract) and
	// returns lead's error, or ErrLeadershipLost.
	Run(ctx context.Context, lead func(ctx context.Context) error) error
	// Identity is this process's name in the election.
	Identity() string
	// Scope names what is being elected (the lease or the lock file); it
	// keys the leadership term in the database.
	Scope() string
	// Healthy reports an error when this process leads but cannot keep
	// leadership (it failed to renew for too long).
	Healthy() error
}
