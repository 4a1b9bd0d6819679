package cluster

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasecron/leasecron/pkg/spec"
)

// sameStatus without times leaves out the times that move on their own,
// but not whether there is a next slot at all: a status whose next slot
// appears or goes is a change to write now, not after StatusMinInterval.
func TestSameStatusSeesTheNextSlotGo(t *testing.T) {
	at := func(s int) *metav1.Time { return &metav1.Time{Time: time.Unix(int64(s), 0)} }
	cases := []struct {
		name      string
		a, b      spec.ScheduledJobStatus
		withTimes bool // sameStatus(a, b, true)
		noTimes   bool // sameStatus(a, b, false)
	}{
		{"next moved", spec.ScheduledJobStatus{NextScheduleTime: at(1)}, spec.ScheduledJobStatus{NextScheduleTime: at(2)}, false, true},
		{"last schedule moved", spec.ScheduledJobStatus{LastScheduleTime: at(1)}, spec.ScheduledJobStatus{LastScheduleTime: at(2)}, false, true},
		{"next gone", spec.ScheduledJobStatus{NextScheduleTime: at(1)}, spec.ScheduledJobStatus{}, false, false},
		{"next appeared", spec.ScheduledJobStatus{}, spec.ScheduledJobStatus{NextScheduleTime: at(1)}, false, false},
		{"failure message", spec.ScheduledJobStatus{LastFailure: "x"}, spec.ScheduledJobStatus{}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := sameStatus(c.a, c.b, true); got != c.withTimes {
				t.Errorf("sameStatus(times) = %v, want %v", got, c.withTimes)
			}
			if got := sameStatus(c.a, c.b, false); got != c.noTimes {
				t.Errorf("sameStatus(no times) = %v, want %v", got, c.noTimes)
			}
		})
	}
}

// A suspended job's nextScheduleTime goes within a status pass or two,
// even when StatusMinInterval holds back every write of times alone for an
// hour: `kubectl get` must not show a NEXT for a job that has none.
func TestSuspendClearsNextScheduleTimeAtOnce(t *testing.T) {
	e := start(t, func(o *Options) { o.StatusMinInterval = time.Hour })
	e.lead(t)
	e.apply(t, counterJob("tick", "* * * * * *", ""))
	await(t, "tick's nextScheduleTime", func() bool { return e.get(t, "tick").Status.NextScheduleTime != nil })

	e.patch(t, "tick", `{"spec":{"suspend":true}}`)
	sent := time.Now()
	await(t, "tick's Suspended=True", func() bool {
		c, ok := condition(e.get(t, "tick"), spec.ConditionSuspended)
		return ok && c.Status == metav1.ConditionTrue
	})
	deadline := sent.Add(5 * time.Second) // StatusEvery is 100ms; an hour is the interval held back
	for e.get(t, "tick").Status.NextScheduleTime != nil {
		if time.Now().After(deadline) {
			t.Fatalf("suspended tick still shows nextScheduleTime %s %s after the suspend",
				e.get(t, "tick").Status.NextScheduleTime, time.Since(sent).Round(time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond) // polling the status
	}
	t.Logf("nextScheduleTime gone %s after the suspend", time.Since(sent).Round(time.Millisecond))

	e.patch(t, "tick", `{"spec":{"suspend":false}}`)
	await(t, "resumed tick's nextScheduleTime", func() bool { return e.get(t, "tick").Status.NextScheduleTime != nil })
}
