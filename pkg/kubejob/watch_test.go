package kubejob_test

import (
	"context"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/kubejob"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

// The edges of following a Job that a real API server shows rarely, on a
// fake: a watch the server ends without an event is watched again, and a
// watch whose history is gone (410 Expired) makes Run read the Job again,
// which has finished meanwhile.
func TestFollowRewatchesAndRereads(t *testing.T) {
	const ns = "leasecron"
	name := kubejob.JobName(jobName, slot)
	c := fake.NewClientset(&batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: ns, ResourceVersion: "1",
		Labels: map[string]string{kubejob.LabelJob: jobName, kubejob.LabelSlot: kubejob.SlotLabel(slot)},
	}})
	var (
		mu      sync.Mutex
		watches int
	)
	c.PrependWatchReactor("jobs", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		watches++
		w := watch.NewFakeWithOptions(watch.FakeOptions{ChannelSize: 1})
		switch watches {
		case 1: // ended by the server at once
			w.Stop()
		case 2: // the history is gone; the Job finishes meanwhile
			done := &batchv1.Job{}
			obj, err := c.Tracker().Get(batchv1.SchemeGroupVersion.WithResource("jobs"), ns, name)
			if err != nil {
				t.Error(err)
			}
			obj.(*batchv1.Job).DeepCopyInto(done)
			done.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
			if err := c.Tracker().Update(batchv1.SchemeGroupVersion.WithResource("jobs"), done, ns); err != nil {
				t.Error(err)
			}
			w.Error(&metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})
		default:
			t.Errorf("watch %d: want two at most", watches)
		}
		return true, w, nil
	})
	var creates int
	c.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		creates++
		return false, nil, nil // the tracker answers: AlreadyExists
	})

	def, err := spec.NewCatalog(kubejob.Kind{Jobs: c.BatchV1().Jobs(ns), Namespace: ns}).Definition(newJob(jobName, template()), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := time.LoadLocation("Europe/Berlin")
	s := jobs.Slot{Job: jobName, Time: slot, Prev: prevSlot, Date: model.DateOf(slot.In(loc)), Location: loc, Key: slotKey, Attempt: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := def.Work.(jobs.Job).Run(ctx, s); err != nil {
		t.Fatalf("Run = %v, want nil: the Job has finished", err)
	}
	if creates != 1 || watches != 2 {
		t.Fatalf("%d creates and %d watches, want 1 and 2", creates, watches)
	}
}
