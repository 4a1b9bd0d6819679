// Package leader elects one leader among the replicas of leasecron.
//
// Two electors share one small interface, so the rest of the program does not
// know which one it has:
//
//   - Lease holds a coordination.k8s.io Lease. It is for Kubernetes:
//     replicas on any node compete, a holder that stops renewing loses the
//     lease after LeaseDuration, and a holder that shuts down releases it so
//     a follower takes over at once.
//   - FileLock uses an exclusive lock on a file (flock(2) on Linux and
//     macOS, LockFileEx on Windows). It guards one host only: processes on
//     other machines (or with another lock file) do not see it. The kernel
//     drops the lock when the holder's process ends, however it ends, and a
//     waiting process takes over within milliseconds. A lock file removed or
//     replaced while held lets a standby lock a new file at once, so the
//     holder checks every DefaultLockCheck (1s) that it still holds the file
//     at the path, and gives up leadership when it does not.
//
// # The Lease election
//
// Lease follows client-go's leader election rule for rule (tools/
// leaderelection with a LeaseLock and ReleaseOnCancel): the same record in
// the Lease, the same defaults and invariants (15s/10s/2s), expiry judged by
// the follower's own clock from the moment it last saw the Lease change (the
// moment a read returned, not when it was sent, so a slow GET cannot age a
// fresh renewal), a leader that gives up after RenewDeadline without a
// renewal, and a release that writes an empty holder. A release refused by a
// conflict (something else wrote the Lease) is read again and retried, a
// few times within RenewDeadline, while the Lease still names this process
// (client-go retries a conflicting release too). So leasecron and client-go's own elector can hand one
// Lease back and forth (the integration test does, both ways), and
// test/bench runs the two side by side under the same faults (a slow GET, a
// silent or instantly closing watch, a refused release, an outage, another
// writer) and checks that leasecron never has two leaders for longer than
// client-go does.
//
// It is written here rather than used from client-go for two reasons.
// client-go's elector polls: a follower notices a released Lease only at its
// next RetryPeriod tick (2–4.4 s by default), and it has no "try now" hook.
// And tools/leaderelection imports client-go's clientset and informers, which
// register every built-in API group at start-up, in a process that reads one
// kind of object. The elector talks to the API server through client-go's
// REST client (KubeClient) with a scheme of just Leases and Events; that took
// the binary from 49.5 MB to 31.2 MB and a leader's resident memory from
// 41 MiB to 28 MiB (BENCHMARKS.md).
//
// A follower watches the one Lease (a list and a watch selecting
// metadata.name, resumed from the last resourceVersion) and tries to acquire
// the moment the watch shows it released (an empty holderIdentity) or
// deleted, and again when a held Lease's duration has passed since its last
// change. While the watch is connected the follower's reads are answered from
// the watched object instead of a GET. The object carries its
// resourceVersion, so an Update based on a stale copy fails with a conflict:
// a stale view can delay a takeover, not make a wrong one. After such a
// conflict the follower reads with a GET at once, and goes on reading with
// GETs until the watch shows a change, so a watch that stays open but says
// nothing costs a poll, not the takeover. A follower's API traffic is then
// one long watch request. When the watch cannot be established (RBAC without
// list/watch, an old server, an outage), or ends before any event or
// bookmark (a proxy that closes it at once), the follower polls every
// RetryPeriod with client-go's jitter and retries the watch after a backoff
// that starts at RetryPeriod and doubles up to 5 minutes; only an event or a
// bookmark resets it. It logs one warning. The leader neither watches nor
// reads from the watch: it renews with an Update every RetryPeriod.
//
// An acquiring Create or Update is never cancelled, not even by shutdown:
// that could leave this process holding the Lease without knowing. If it
// won, lead runs (it sees the shutdown and returns) and the Lease is
// released.
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
// without being asked to: the lease could not be renewed in time, or the
// lock file was removed or replaced while held.
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
