package leader

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// maxWatchBackoff caps the wait between attempts to (re)establish the watch.
// Meanwhile the follower polls like plain client-go, so a long cap costs only
// the fast handover, and a forbidden watch is retried about every 5 minutes:
// one request, noise next to the poll it stands in for.
const maxWatchBackoff = 5 * time.Minute

// errWatchClosed ends a watch whose result channel closed.
var errWatchClosed = errors.New("watch closed")

// watchLease keeps e's view of the Lease current while this process follows:
// a list and a watch, both selecting the one Lease by metadata.name (so a Role
// can grant list and watch with resourceNames), resumed from the last
// resourceVersion when the server ends the watch, listed again when the
// resourceVersion is too old. It returns when ctx ends (this process leads or
// Run returns). While the watch is down the elector polls the API server.
//
// A failed list or watch, and a watch that ends without delivering an event
// or a bookmark, are retried after a backoff that starts at RetryPeriod and
// doubles up to maxWatchBackoff; only an event or a bookmark resets it. So a
// server (or proxy) that closes every watch at once sees one list and one
// watch per backoff, not a loop of them.
func (e *election) watchLease(ctx context.Context) {
	retry := e.cfg.RetryPeriod
	sel := fields.OneTermEqualSelector("metadata.name", e.cfg.Name).String()
	warned, failing := false, false
	backoff := retry
	for ctx.Err() == nil {
		err := e.listAndWatch(ctx, sel, func() {
			if failing {
				failing = false
				e.log.Info("watching the Lease again: followers take over a released Lease at once")
			}
			e.log.Debug("watching the Lease for a release")
		}, func() { backoff = retry })
		e.setWatching(false)
		if ctx.Err() != nil {
			return
		}
		failing = true
		if !warned {
			warned = true
			msg := "cannot watch the Lease: polling it every retry period instead, so a released Lease is noticed up to that late"
			if apierrors.IsForbidden(err) {
				msg = fmt.Sprintf("RBAC forbids list/watch on %s: polling it every retry period instead, so a released Lease is noticed up to that late; grant list and watch on this Lease (resourceNames works: the requests select metadata.name)", e.leaseResource())
			}
			e.log.Warn(msg, "err", err, "retry_in", backoff)
		} else {
			e.log.Debug("cannot watch the Lease", "err", err, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxWatchBackoff)
	}
}

// errWatchEmpty ends a watch that closed before any event or bookmark.
var errWatchEmpty = errors.New("the watch closed before any event or bookmark")

// listAndWatch lists the Lease and watches it until the watch fails, closes
// without an event or a bookmark (errWatchEmpty), or ctx ends; connected is
// called each time a watch is established, progressed on each event or
// bookmark.
func (e *election) listAndWatch(ctx context.Context, sel string, connected, progressed func()) error {
	list, err := e.cfg.Client.List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	var cur *coordinationv1.Lease
	for i := range list.Items {
		if list.Items[i].Name == e.cfg.Name {
			cur = list.Items[i].DeepCopy()
		}
	}
	rv := list.ResourceVersion
	for {
		// Like client-go's reflector: the server ends each watch after
		// 5–10 minutes, and the next one resumes from rv.
		timeout := int64(300 + rand.IntN(300))
		w, err := e.cfg.Client.Watch(ctx, metav1.ListOptions{
			FieldSelector: sel, ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: &timeout,
		})
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		e.setWatched(cur, true)
		connected()
		events := 0
		err = e.consume(ctx, w, &cur, &rv, func() { events++; progressed() })
		w.Stop()
		if !errors.Is(err, errWatchClosed) {
			return err
		}
		e.setWatching(false)
		if events == 0 {
			return errWatchEmpty
		}
	}
}

// consume applies w's events to cur and rv until w closes (errWatchClosed),
// the server reports an error (for example 410 Gone: list again), or ctx
// ends (nil); progressed is called on each event or bookmark.
func (e *election) consume(ctx context.Context, w watch.Interface, cur **coordinationv1.Lease, rv *string, progressed func()) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return errWatchClosed
			}
			switch ev.Type {
			case watch.Error:
				return fmt.Errorf("watch: %w", apierrors.FromObject(ev.Object))
			case watch.Bookmark:
				progressed()
				if m, err := metav1ObjectRV(ev.Object); err == nil && m != "" {
					*rv = m
				}
				continue
			}
			l, isLease := ev.Object.(*coordinationv1.Lease)
			if !isLease || l.Name != e.cfg.Name {
				continue
			}
			progressed()
			if l.ResourceVersion != "" {
				*rv = l.ResourceVersion
			}
			if ev.Type == watch.Deleted {
				*cur = nil
			} else {
				*cur = l.DeepCopy()
			}
			e.setWatched(*cur, true)
		}
	}
}

func metav1ObjectRV(o any) (string, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return "", errors.New("not an object")
	}
	return m.GetResourceVersion(), nil
}

// acquirable reports whether a watched Lease is free for the taking: absent,
// or released (no holder: what release writes, as client-go's
// ReleaseOnCancel does).
func acquirable(l *coordinationv1.Lease) bool {
	return holderOf(l) == ""
}

// expiryMargin is how long after a held Lease's expiry, as this process
// observed it, the follower wakes to take it over.
const expiryMargin = 100 * time.Millisecond

// setWatched records the watch's view of the Lease (ok: the watch is
// connected and the view is current). It wakes the follower when the Lease
// became free, and also when it changed, and notes the time of the change:
// expiry is judged from the moment this process saw the last renewal. Each
// change also sets a timer for the moment that Lease expires, so a follower
// takes over a crashed holder's Lease within expiryMargin of its lease
// duration instead of at its next poll.
func (e *election) setWatched(l *coordinationv1.Lease, ok bool) {
	now := time.Now()
	e.mu.Lock()
	changed := (l == nil) != (e.watched == nil) || (l != nil && l.ResourceVersion != e.watched.ResourceVersion)
	e.watched, e.watching = l, ok
	if ok && changed {
		e.watchStale = false // the watch moved on: trust it again
	}
	if ok && l != nil {
		e.observeLocked(l, now)
	}
	wake := ok && (acquirable(l) || changed)
	if !ok || acquirable(l) || changed {
		e.stopExpiryLocked()
	}
	if ok && !acquirable(l) && e.expiry == nil && l.Spec.LeaseDurationSeconds != nil {
		e.expiry = time.AfterFunc(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second+expiryMargin, e.poke)
	}
	e.mu.Unlock()
	if wake {
		e.poke()
	}
}

// setWatching marks the watched view as usable or not.
func (e *election) setWatching(ok bool) {
	e.mu.Lock()
	l := e.watched
	e.mu.Unlock()
	e.setWatched(l, ok)
}

func (e *election) stopExpiryLocked() {
	if e.expiry != nil {
		e.expiry.Stop()
		e.expiry = nil
	}
}
