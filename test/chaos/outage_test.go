package chaos

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/kube"
)

// TestAPIServerOutage stops the kube-apiserver for 30 seconds under three
// replicas: the leader, unable to renew, stops running slots within the renew
// deadline and no slot runs while nobody holds a valid lease; after the
// apiserver returns, one leader takes over and catches up every slot missed,
// each once.
func TestAPIServerOutage(t *testing.T) {
	const outage = 30 * time.Second
	cp := kube.Start(t, kube.Options{})
	dsn := testenv.DSN(t, "mysql")
	f, rs := startFleet(t, cp, dsn, 3)
	f.awaitLeader(90 * time.Second)
	f.awaitSlot(time.Now().Add(2*time.Second), 30*time.Second)

	// The leader renewed at most a retry period before the stop, so its lease
	// is valid until at most leaseDuration after it: no slot may succeed
	// later than that until the apiserver is back.
	cp.StopAPIServer()
	stopped := time.Now()
	time.Sleep(outage) // the outage itself
	restarted := time.Now()
	if err := cp.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	leader := f.awaitLeader(60 * time.Second)
	f.awaitSlot(time.Now().Add(3*time.Second), 60*time.Second)

	f.mu.Lock()
	var lastBefore, firstAfter time.Time
	var late []string
	leaders := map[string]bool{}
	for _, e := range f.events {
		switch {
		case e.msg == "slot succeeded" && e.at.After(stopped.Add(leaseDuration)) && e.at.Before(restarted):
			late = append(late, e.proc+" at "+e.at.Format(time.StampMilli))
		case e.msg == "slot succeeded" && e.at.Before(restarted) && e.at.After(lastBefore):
			lastBefore = e.at
		case e.msg == "slot succeeded" && !e.at.Before(restarted) && (firstAfter.IsZero() || e.at.Before(firstAfter)):
			firstAfter = e.at
		case e.msg == "leading" && e.at.After(restarted):
			leaders[e.proc] = true
		}
	}
	f.mu.Unlock()
	if len(late) > 0 {
		t.Errorf("slots ran while no lease could be valid: %s", strings.Join(late, ", "))
	}
	if len(leaders) != 1 {
		t.Errorf("%d processes began leading after the apiserver returned, want 1: %v", len(leaders), leaders)
	}
	t.Logf("apiserver down %s; the last slot before it ran %s after the stop (renew deadline %s); %s led after the restart began, first slot %s after it",
		restarted.Sub(stopped).Round(time.Millisecond), lastBefore.Sub(stopped).Round(time.Millisecond), renewDeadline,
		leader, firstAfter.Sub(restarted).Round(time.Millisecond))
	f.calm(rs)
	report(t, dsn, f, map[string]int{"kube-apiserver stopped " + outage.String(): 1})
}
