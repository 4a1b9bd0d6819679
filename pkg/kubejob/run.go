package kubejob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

// rewatchPause is how long Run waits before it watches again after a
// watch that ended at once without an event, so that a server that closes
// every watch is not asked again in a tight loop.
const rewatchPause = time.Second

// Run implements jobs.Job: it creates the slot's Job, or finds the one an
// earlier attempt or another leader created, and follows it until it has
// finished. It returns nil when the Job is Complete and the Job's failure
// when it is Failed; when ctx ends first, it returns ctx's error at once and
// leaves the Job running, for the next attempt to follow.
func (w *Job) Run(ctx context.Context, slot jobs.Slot) error {
	name := JobName(w.job, slot.Time)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("Job %s/%s not created: %w", w.namespace, name, context.Cause(ctx))
	}
	log := w.log.With("job", w.job, "slot", slot.Time.UTC().Format(time.RFC3339Nano), "kubernetes_job", name)
	job, err := w.createOrGet(ctx, slot, name, log)
	if err != nil {
		return err
	}
	job, err = w.follow(ctx, job)
	if err != nil {
		return err
	}
	w.prune(ctx, job, log)
	return w.outcome(job)
}

// createOrGet creates the slot's Job, or gets the one that exists.
func (w *Job) createOrGet(ctx context.Context, slot jobs.Slot, name string, log *slog.Logger) (*batchv1.Job, error) {
	for try := 1; ; try++ {
		created, err := w.api.Create(ctx, w.object(slot, name), metav1.CreateOptions{})
		if err == nil {
			log.Info("Job created", "attempt", slot.Attempt)
			return created, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, w.apiError(ctx, "create", name, nil, err)
		}
		got, err := w.api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && try < 3 {
			continue // deleted between the create and the get: create it
		}
		if err != nil {
			return nil, w.apiError(ctx, "get", name, nil, err)
		}
		if l := got.Labels; l[LabelJob] != w.job || l[LabelSlot] != SlotLabel(slot.Time) {
			return nil, fmt.Errorf("a Job named %s already exists in namespace %s, and it is not job %s's Job of slot %s (its labels %s=%q, %s=%q): delete or rename that Job, this slot's Job needs its name",
				name, w.namespace, w.job, slot.Time.UTC().Format(time.RFC3339Nano), LabelJob, l[LabelJob], LabelSlot, l[LabelSlot])
		}
		log.Info("following the slot's Job, created before", "created", got.CreationTimestamp.UTC().Format(time.RFC3339), "attempt", slot.Attempt)
		return got, nil
	}
}

// object is the slot's Job: the template with the kind's name, namespace,
// labels, annotations, owner, deadline and the slot context.
func (w *Job) object(slot jobs.Slot, name string) *batchv1.Job {
	t := w.template.DeepCopy()
	j := &batchv1.Job{ObjectMeta: t.ObjectMeta, Spec: t.Spec}
	j.Name, j.Namespace = name, w.namespace
	ours := map[string]string{LabelJob: w.job, LabelSlot: SlotLabel(slot.Time)}
	j.Labels = merged(j.Labels, ours)
	j.Spec.Template.Labels = merged(j.Spec.Template.Labels, ours)
	j.Annotations = merged(j.Annotations, map[string]string{
		AnnotationKey: slot.Key, AnnotationSlot: slot.Time.UTC().Format(time.RFC3339Nano),
	})
	if w.owner != nil {
		j.OwnerReferences = []metav1.OwnerReference{*w.owner}
	}
	if d := j.Spec.ActiveDeadlineSeconds; d == nil || *d > w.deadline {
		j.Spec.ActiveDeadlineSeconds = &w.deadline
	}
	vars := spec.SlotEnv(slot)
	env := make([]corev1.EnvVar, 0, len(vars))
	for _, v := range vars {
		env = append(env, corev1.EnvVar{Name: v.Name, Value: v.Value})
	}
	ps := &j.Spec.Template.Spec
	for _, cs := range [][]corev1.Container{ps.InitContainers, ps.Containers} {
		for i := range cs {
			cs[i].Env = append(slices.Clone(env), cs[i].Env...)
		}
	}
	return j
}

func merged(m, add map[string]string) map[string]string {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, add)
	return out
}

// follow watches the Job until it has finished, and returns it then.
func (w *Job) follow(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	name, uid := job.Name, job.UID
	cur, rv := job, job.ResourceVersion
	for !finished(cur) {
		if rv == "" { // the watch's history is gone: read the Job again
			got, err := w.api.Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return nil, w.deleted(cur)
			case err != nil:
				return nil, w.apiError(ctx, "get", name, cur, err)
			case got.UID != uid:
				return nil, w.deleted(cur)
			}
			cur, rv = got, got.ResourceVersion
			continue
		}
		wi, err := w.api.Watch(ctx, metav1.ListOptions{
			FieldSelector:       fields.OneTermEqualSelector("metadata.name", name).String(),
			ResourceVersion:     rv,
			AllowWatchBookmarks: true,
		})
		switch {
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			rv = ""
			continue
		case err != nil:
			return nil, w.apiError(ctx, "watch", name, cur, err)
		}
		began := time.Now()
		var events int
		cur, rv, events, err = w.events(ctx, wi, cur, rv)
		wi.Stop()
		if err != nil {
			return nil, err
		}
		if events == 0 && time.Since(began) < rewatchPause && !finished(cur) {
			t := time.NewTimer(rewatchPause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, w.ended(ctx, cur)
			case <-t.C:
			}
		}
	}
	return cur, nil
}

// events reads one watch of the Job until the Job has finished, the watch
// ends or ctx ends. It returns the Job as last seen, the resource version
// to watch from next ("" when the watch's history is gone) and how many
// events it read.
func (w *Job) events(ctx context.Context, wi watch.Interface, cur *batchv1.Job, rv string) (*batchv1.Job, string, int, error) {
	uid := cur.UID
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil, "", n, w.ended(ctx, cur)
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return cur, rv, n, nil // the server ended the watch: watch again
			}
			switch ev.Type {
			case watch.Bookmark:
				if m, err := meta.Accessor(ev.Object); err == nil {
					rv = m.GetResourceVersion()
				}
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					return cur, "", n, nil
				}
				return nil, "", n, w.apiError(ctx, "watch", cur.Name, cur, err)
			case watch.Deleted:
				if j, ok := ev.Object.(*batchv1.Job); !ok || j.UID == uid {
					return nil, "", n, w.deleted(cur)
				}
			case watch.Added, watch.Modified:
				j, ok := ev.Object.(*batchv1.Job)
				if !ok {
					continue
				}
				if j.UID != uid {
					return nil, "", n, w.deleted(cur)
				}
				cur, rv = j, j.ResourceVersion
				if finished(cur) {
					return cur, rv, n + 1, nil
				}
			}
		}
	}
}

// condition reports whether the Job has the condition typ with status True,
// and returns it.
func condition(j *batchv1.Job, typ batchv1.JobConditionType) (batchv1.JobCondition, bool) {
	for _, c := range j.Status.Conditions {
		if c.Type == typ && c.Status == corev1.ConditionTrue {
			return c, true
		}
	}
	return batchv1.JobCondition{}, false
}

// finished reports whether the Job is Complete or Failed. (Its Pods may
// still be terminating before that: the Job controller sets the terminal
// condition once they are gone.)
func finished(j *batchv1.Job) bool {
	_, ok := condition(j, batchv1.JobComplete)
	_, failed := condition(j, batchv1.JobFailed)
	return ok || failed
}

// outcome is the slot's result from its finished Job.
func (w *Job) outcome(j *batchv1.Job) error {
	if _, ok := condition(j, batchv1.JobComplete); ok {
		return nil
	}
	c, _ := condition(j, batchv1.JobFailed)
	msg := fmt.Sprintf("Job %s/%s failed: %s", w.namespace, j.Name, c.Reason)
	if c.Message != "" {
		msg += ": " + c.Message
	}
	if n := j.Status.Failed; n > 0 {
		msg += fmt.Sprintf(" (Pods failed: %d)", n)
	}
	return errors.New(msg)
}

// ended is the error of an attempt whose ctx ended while its Job ran.
func (w *Job) ended(ctx context.Context, cur *batchv1.Job) error {
	cause := context.Cause(ctx)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		deadline := ""
		if d := cur.Spec.ActiveDeadlineSeconds; d != nil {
			deadline = fmt.Sprintf(" (activeDeadlineSeconds %d)", *d)
		}
		return fmt.Errorf("Job %s/%s had not finished when the attempt's time (spec.timeout %s) was up: it is left to run to its own deadline%s, and the slot's next attempt follows it: %w",
			w.namespace, cur.Name, w.timeout, deadline, cause)
	}
	return fmt.Errorf("Job %s/%s left running: the attempt was cancelled (leadership lost, or the controller is shutting down), and the slot's next attempt, here or on the next leader, follows it: %w",
		w.namespace, cur.Name, cause)
}

// deleted is the error of an attempt whose Job went away before it finished.
func (w *Job) deleted(cur *batchv1.Job) error {
	return fmt.Errorf("Job %s/%s was deleted before it finished: the slot's next attempt creates it again", w.namespace, cur.Name)
}

// apiError is the error of a failed API call on the Job name (cur, once it
// is known), or ctx's error when that is why it failed.
func (w *Job) apiError(ctx context.Context, verb, name string, cur *batchv1.Job, err error) error {
	if ctx.Err() != nil {
		if cur != nil {
			return w.ended(ctx, cur)
		}
		return fmt.Errorf("%s Job %s/%s: the attempt ended first: %w", verb, w.namespace, name, context.Cause(ctx))
	}
	hint := ""
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "blockOwnerDeletion"):
		hint = ": this API server checks owner references (OwnerReferencesPermissionEnforcement): grant the controller's ServiceAccount update on scheduledjobs/finalizers (leasecron.io) in its namespace too (the chart: kubernetesJob.grantFinalizers=true)"
	case apierrors.IsForbidden(err):
		hint = ": grant the controller's ServiceAccount create, get, list, watch and delete on jobs (batch) in its namespace"
	}
	return fmt.Errorf("%s Job %s/%s: %w%s", verb, w.namespace, name, err, hint)
}

// prune deletes this job's finished Jobs beyond the history limits, oldest
// slot first, sparing just (the Job of the slot that just finished).
// Failures are logged: the slot's outcome is its Job's.
func (w *Job) prune(ctx context.Context, just *batchv1.Job, log *slog.Logger) {
	list, err := w.api.List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{LabelJob: w.job}).String()})
	if err != nil {
		log.Warn("could not list the job's Jobs to delete those beyond the history limits", "err", err)
		return
	}
	// The Jobs of each kind beyond just, and whether just is of that kind.
	var ok, failed []*batchv1.Job
	justOK, justFailed := false, false
	for i := range list.Items {
		j := &list.Items[i]
		if j.DeletionTimestamp != nil {
			continue
		}
		_, isOK := condition(j, batchv1.JobComplete)
		_, isFailed := condition(j, batchv1.JobFailed)
		switch {
		case j.UID == just.UID:
			justOK, justFailed = isOK, isFailed && !isOK
		case isOK:
			ok = append(ok, j)
		case isFailed:
			failed = append(failed, j)
		}
	}
	w.deleteOldest(ctx, ok, justOK, w.keepOK, log)
	w.deleteOldest(ctx, failed, justFailed, w.keepFail, log)
}

// deleteOldest deletes the oldest of js so that keep remain, counting just
// when withJust (just is never deleted).
func (w *Job) deleteOldest(ctx context.Context, js []*batchv1.Job, withJust bool, keep int, log *slog.Logger) {
	n := len(js)
	if withJust {
		n++
	}
	n = min(max(n-keep, 0), len(js)) // how many to delete
	slices.SortFunc(js, func(a, b *batchv1.Job) int {
		if c := slotOf(a).Compare(slotOf(b)); c != 0 {
			return c
		}
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, j := range js[:n] {
		err := w.api.Delete(ctx, j.Name, metav1.DeleteOptions{
			PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
			Preconditions:     &metav1.Preconditions{UID: ptr.To(j.UID)},
		})
		switch {
		case err == nil:
			log.Info("deleted a Job beyond the history limit", "deleted", j.Name, "deleted_slot", j.Annotations[AnnotationSlot])
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// already gone, or replaced by another of that name
		default:
			log.Warn("could not delete a Job beyond the history limit", "deleted", j.Name, "err", err)
		}
	}
}

// slotOf is the slot of one of the job's Jobs, from its annotation; the
// zero time if it has none.
func slotOf(j *batchv1.Job) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, j.Annotations[AnnotationSlot])
	return t
}

var _ jobs.Job = (*Job)(nil)
