package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

// writer is the leader's status writer and trigger runner.
type writer struct {
	s       *Source
	limiter flowcontrol.RateLimiter
	// written is when each object's status was last written, by UID.
	written map[types.UID]time.Time
	// requeued: the leadership (Source.term) in which an object's last
	// trigger was handed to the scheduler again, by UID.
	requeued map[types.UID]int
	// reported: refusals already logged and recorded as an Event, by
	// UID/generation/reason.
	reported map[string]bool
	// failures caches the ledger's text of a failed slot, by job.
	failures map[string]failure
	// slotEvents: what the last Event of a job's failed or missed slots
	// counted, by job/reason.
	slotEvents map[string]slotEvent
}

// slotEvent is the last Event about one job's slots of one reason: the
// tracker's count it covered, and when it was written.
type slotEvent struct {
	upTo int
	at   time.Time
}

// The reasons of the Events about slots.
const (
	ReasonSlotFailed  = "SlotFailed"
	ReasonSlotsMissed = "SlotsMissed"
)

type failure struct {
	slot time.Time
	text string
}

func newWriter(s *Source) *writer {
	return &writer{
		s: s, limiter: flowcontrol.NewTokenBucketRateLimiter(float32(s.o.StatusQPS), s.o.StatusBurst),
		written: map[types.UID]time.Time{}, requeued: map[types.UID]int{}, reported: map[string]bool{}, failures: map[string]failure{},
		slotEvents: map[string]slotEvent{},
	}
}

// round writes what changed, while this process leads. An object whose
// write does not fit in the rate limit now waits for the next round.
func (w *writer) round(ctx context.Context) {
	s := w.s
	s.mu.Lock()
	leading, term, sched := s.leading, s.term, s.sched
	refused, applied := s.refused, s.applied
	s.mu.Unlock()
	if !leading || sched == nil {
		return
	}
	now := time.Now()
	for _, sj := range s.objects() {
		if ctx.Err() != nil {
			return
		}
		if sj.DeletionTimestamp != nil {
			continue // being deleted: it runs nothing more, and its status is moot
		}
		_, runs := applied[sj.Name]
		if r, ok := refused[sj.Name]; ok {
			w.report(ctx, sj, r)
		}
		if runs {
			w.reportSlots(ctx, sj, now)
		}
		st := w.desired(ctx, sj, refused, applied, now)
		if v := sj.Annotations[spec.TriggerAnnotation]; runs && v != "" && v != sj.Status.LastTrigger {
			if !w.limiter.TryAccept() {
				return
			}
			// The trigger is recorded first: a leader that dies after
			// this write leaves the slot to the next, which runs it
			// (below) unless the ledger has it done.
			slot := metav1.NewMicroTime(triggerSlot(now))
			st.LastTrigger, st.LastTriggerTime = v, &slot
			if err := w.write(ctx, sj, st); err != nil {
				s.o.Log.Warn("trigger not recorded; trying again", "scheduled_job", sj.Name, "err", err)
				continue
			}
			w.requeued[sj.UID] = term
			w.trigger(sched, sj.Name, slot.Time, v)
			continue
		}
		if runs && sj.Status.LastTriggerTime != nil && w.requeued[sj.UID] != term {
			// A new leadership: the last trigger may not have run.
			w.requeued[sj.UID] = term
			w.trigger(sched, sj.Name, sj.Status.LastTriggerTime.Time, sj.Status.LastTrigger)
		}
		if sameStatus(st, sj.Status, true) {
			continue
		}
		if sameStatus(st, sj.Status, false) && now.Sub(w.written[sj.UID]) < s.o.StatusMinInterval {
			continue // only times moved: they wait for the interval
		}
		if !w.limiter.TryAccept() {
			return
		}
		if err := w.write(ctx, sj, st); err != nil {
			s.o.Log.Warn("status not written; trying again", "scheduled_job", sj.Name, "err", err)
		}
	}
}

// triggerSlot is the slot a trigger seen at now runs: now to the
// millisecond (what every ledger stores), moved off a whole second so that
// it is never a slot of the schedule, whose slots are whole seconds.
func triggerSlot(now time.Time) time.Time {
	t := now.UTC().Truncate(time.Millisecond)
	if t.Equal(t.Truncate(time.Second)) {
		t = t.Add(time.Millisecond)
	}
	return t
}

func (w *writer) trigger(sched *jobs.Scheduler, name string, slot time.Time, value string) {
	if err := sched.Trigger(name, slot); err != nil {
		w.s.o.Log.Warn("triggered slot not run", "scheduled_job", name, "trigger", value, "err", err)
		return
	}
	w.s.o.Log.Info("slot triggered", "scheduled_job", name, "trigger", value, "slot", slot.UTC().Format(time.RFC3339Nano))
}

// desired is sj's status as the leader sees it now.
func (w *writer) desired(ctx context.Context, sj *spec.ScheduledJob, refused map[string]refusal, applied map[string]jobs.Definition, now time.Time) spec.ScheduledJobStatus {
	st := sj.Status
	st.Conditions = append([]metav1.Condition(nil), sj.Status.Conditions...)
	st.ObservedGeneration = sj.Generation
	seen := w.s.tracker.get(sj.Name)
	st.LastScheduleTime = laterTime(st.LastScheduleTime, seen.started)
	st.LastSuccessfulTime = laterTime(st.LastSuccessfulTime, seen.succeeded)
	if !seen.failed.IsZero() && (st.LastFailureTime == nil || seen.failed.After(st.LastFailureTime.Time)) {
		st.LastFailureTime = &metav1.Time{Time: seen.failed.UTC()}
		st.LastFailure = w.failureText(ctx, sj.Name, seen.failed)
	}
	def, runs := applied[sj.Name]
	st.NextScheduleTime = nil
	if runs && !def.Policy.Suspend {
		if next := def.Schedule.Next(now); !next.IsZero() {
			st.NextScheduleTime = &metav1.Time{Time: next.UTC()}
		}
	}
	ready := metav1.Condition{Type: spec.ConditionReady, Status: metav1.ConditionTrue, Reason: "Scheduled", Message: "the job runs on its schedule"}
	if r, ok := refused[sj.Name]; ok {
		ready = metav1.Condition{Type: spec.ConditionReady, Status: metav1.ConditionFalse, Reason: r.reason, Message: r.message}
	}
	suspended := metav1.Condition{Type: spec.ConditionSuspended, Status: metav1.ConditionFalse, Reason: "Active", Message: "new slots run"}
	if sj.Spec.Suspend {
		suspended = metav1.Condition{Type: spec.ConditionSuspended, Status: metav1.ConditionTrue, Reason: "Suspended", Message: "spec.suspend is true: no new slots; those that pass are missed"}
	}
	failing := metav1.Condition{Type: spec.ConditionFailing, Status: metav1.ConditionFalse, Reason: "NoFailure", Message: "the latest slot that ended did not fail"}
	if st.LastFailureTime != nil && (st.LastSuccessfulTime == nil || st.LastFailureTime.After(st.LastSuccessfulTime.Time)) {
		failing = metav1.Condition{Type: spec.ConditionFailing, Status: metav1.ConditionTrue, Reason: "SlotFailed", Message: st.LastFailure}
	}
	for _, c := range []metav1.Condition{ready, suspended, failing} {
		c.ObservedGeneration = sj.Generation
		meta.SetStatusCondition(&st.Conditions, c)
	}
	return st
}

// failureText is the ledger's error of job's failed slot (kinds keep
// secrets out of it).
func (w *writer) failureText(ctx context.Context, job string, slot time.Time) string {
	if f, ok := w.failures[job]; ok && f.slot.Equal(slot) {
		return f.text
	}
	var run jobs.JobRun
	text := "the slot failed (its ledger row cannot be read)"
	if err := w.s.o.DB.WithContext(ctx).Where("job = ? AND slot = ?", job, slot.UTC()).Take(&run).Error; err == nil {
		text = run.Error
	}
	w.failures[job] = failure{slot, text}
	return text
}

// laterTime returns the later of cur and t (zero t: cur).
func laterTime(cur *metav1.Time, t time.Time) *metav1.Time {
	if t.IsZero() || (cur != nil && !t.After(cur.Time)) {
		return cur
	}
	return &metav1.Time{Time: t.UTC()}
}

// sameStatus compares two statuses as the API server stores them (times to
// the second, conditions without their transition times); with times false
// it leaves out the times that move on their own (last schedule, last
// success, next).
func sameStatus(a, b spec.ScheduledJobStatus, times bool) bool {
	norm := func(st spec.ScheduledJobStatus) spec.ScheduledJobStatus {
		if !times {
			// Whether there is a next slot is not a time: a suspended
			// job's next slot goes at once.
			st.LastScheduleTime, st.LastSuccessfulTime = nil, nil
			if st.NextScheduleTime != nil {
				st.NextScheduleTime = &metav1.Time{}
			}
		}
		st.Conditions = append([]metav1.Condition(nil), st.Conditions...)
		for i := range st.Conditions {
			st.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		return st
	}
	ja, _ := json.Marshal(norm(a))
	jb, _ := json.Marshal(norm(b))
	return string(ja) == string(jb)
}

// write replaces sj's status (the status subresource: only patch on
// scheduledjobs/status is needed).
func (w *writer) write(ctx context.Context, sj *spec.ScheduledJob, st spec.ScheduledJobStatus) error {
	patch, err := json.Marshal([]map[string]any{{"op": "add", "path": "/status", "value": st}})
	if err != nil {
		return err
	}
	_, err = w.s.o.Client.Resource(Resource).Namespace(sj.Namespace).Patch(ctx, sj.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "leasecron"}, "status")
	if err != nil {
		return fmt.Errorf("patch status of %s: %w", sj.Name, err)
	}
	w.written[sj.UID] = time.Now()
	return nil
}

var eventsResource = schema.GroupVersionResource{Version: "v1", Resource: "events"}

// report records a refused spec as a Warning Event on its object, once per
// generation.
func (w *writer) report(ctx context.Context, sj *spec.ScheduledJob, r refusal) {
	key := fmt.Sprintf("%s/%d/%s", sj.UID, sj.Generation, r.reason)
	if w.reported[key] || !w.limiter.TryAccept() {
		return // done, or in a later round
	}
	w.reported[key] = true
	w.s.o.Log.Error("ScheduledJob refused: it does not run; fix its spec", "scheduled_job", sj.Name, "generation", sj.Generation, "reason", r.reason, "err", r.message)
	now := time.Now()
	if err := w.event(ctx, sj, r.reason, r.message, 1, now, now); err != nil {
		w.s.o.Log.Warn("refusal not recorded as an Event", "scheduled_job", sj.Name, "err", err)
	}
}

// reportSlots records a Warning Event on sj for the slots of its job that
// failed for good (SlotFailed) and that were missed (SlotsMissed) since
// the last such Event: the first at once, then at most one per reason per
// Options.EventEvery, which counts the slots since the one before, so a
// per-second job failing every second adds one Event per interval, not
// one per slot.
func (w *writer) reportSlots(ctx context.Context, sj *spec.ScheduledJob, now time.Time) {
	seen := w.s.tracker.get(sj.Name)
	w.slotsEvent(ctx, sj, ReasonSlotFailed, seen.failures, now, func(n int) string {
		return fmt.Sprintf("%s failed for good (every attempt failed until its deadline); the latest, %s: %s",
			slots(n), seen.failed.UTC().Format(time.RFC3339Nano), w.failureText(ctx, sj.Name, seen.failed))
	})
	w.slotsEvent(ctx, sj, ReasonSlotsMissed, seen.missed, now, func(n int) string {
		return fmt.Sprintf("%s missed: not run because they fell outside the catch-up window or limit, or passed while the job was suspended", slots(n))
	})
}

func slots(n int) string {
	if n == 1 {
		return "1 slot"
	}
	return fmt.Sprintf("%d slots", n)
}

// slotsEvent writes the Event of one reason if count grew since the last
// one and the interval allows.
func (w *writer) slotsEvent(ctx context.Context, sj *spec.ScheduledJob, reason string, count int, now time.Time, message func(n int) string) {
	key := sj.Name + "/" + reason
	last, ok := w.slotEvents[key]
	if count <= last.upTo || (ok && now.Sub(last.at) < w.s.o.EventEvery) || !w.limiter.TryAccept() {
		return // nothing new, too soon, or in a later round
	}
	first := now
	if ok {
		first = last.at
	}
	n := count - last.upTo
	w.slotEvents[key] = slotEvent{upTo: count, at: now}
	if err := w.event(ctx, sj, reason, message(n), n, first, now); err != nil {
		w.s.o.Log.Warn("slots not recorded as an Event", "scheduled_job", sj.Name, "reason", reason, "err", err)
	}
}

// maxEventMessage bounds an Event's message (the API server refuses
// longer ones).
const maxEventMessage = 1024

// event creates a Warning Event on sj that counts count occurrences
// between first and last.
func (w *writer) event(ctx context.Context, sj *spec.ScheduledJob, reason, message string, count int, first, last time.Time) error {
	if len(message) > maxEventMessage {
		message = strings.ToValidUTF8(message[:maxEventMessage-3], "") + "..."
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%s.%x", sj.Name, strings.ToLower(reason), last.UnixNano()), Namespace: sj.Namespace},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: spec.APIVersion, Kind: spec.KindName, Namespace: sj.Namespace, Name: sj.Name, UID: sj.UID,
			ResourceVersion: sj.ResourceVersion,
		},
		Reason: reason, Message: message, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "leasecron"},
		FirstTimestamp: metav1.NewTime(first), LastTimestamp: metav1.NewTime(last), Count: int32(min(count, math.MaxInt32)),
		ReportingController: "leasecron",
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ev)
	if err != nil {
		return fmt.Errorf("event %s of %s: %w", reason, sj.Name, err)
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetAPIVersion("v1")
	u.SetKind("Event")
	if _, err := w.s.o.Client.Resource(eventsResource).Namespace(sj.Namespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create event %s of %s: %w", reason, sj.Name, err)
	}
	return nil
}
