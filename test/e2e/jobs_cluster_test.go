package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	clustersource "github.com/leasecron/leasecron/internal/cluster"
	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

// testJobsCluster: with jobs.source=cluster (the chart's default) the chart
// installs the ScheduledJob CRD and renders jobs.items as ScheduledJob
// objects; the controllers run those and one added with kubectl apply, and
// the leader writes their status; and the controller's ServiceAccount has
// exactly the chart's Role: it reads the ScheduledJobs and writes their
// status, creates Events, and can do nothing with Secrets, the ScheduledJobs'
// spec, batch Jobs or another namespace — until kubernetesJob.enabled, which
// adds the batch Jobs verbs.
func testJobsCluster(t *testing.T, c *cluster) {
	began := time.Now()
	rc := testenv.NewReceiver(t, nil)
	items := []any{httpJob(rc, "hook-a", "a {{.Key}}"), httpJob(rc, "hook-b", "b {{.Key}}")}
	r := c.install(t, "jobs-cluster", 2, "", map[string]any{
		"schedules": map[string]any{"daily-stats": nil}, // only the ScheduledJobs
		"jobs":      map[string]any{"items": items},     // source: the default, cluster
	})
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(c.cp.AdminConfig())
	leader := r.waitLeader(t, "", 30*time.Second)

	// The chart's CRD is installed and served.
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crd, err := dyn.Resource(crds).Get(ctx, "scheduledjobs.leasecron.io", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the ScheduledJob CRD after helm install: %v", err)
	}
	var conds []metav1.Condition
	if raw, ok, _ := unstructured.NestedSlice(crd.Object, "status", "conditions"); ok {
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &conds)
	}
	if !meta.IsStatusConditionTrue(conds, "Established") {
		t.Fatalf("the ScheduledJob CRD is not Established: %+v", conds)
	}

	// kubectl get scheduledjobs shows exactly the items, with the chart's
	// labels and their specs.
	var list spec.ScheduledJobList
	out := c.mustTool(t, c.kubectl, "get", "scheduledjobs", "-n", r.ns, "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get scheduledjobs -o json: %v\n%s", err, out)
	}
	var names []string
	for _, sj := range list.Items {
		names = append(names, sj.Name)
		if sj.Labels["app.kubernetes.io/instance"] != r.name || sj.Labels["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("ScheduledJob %s has labels %v, want the chart's (instance %s, managed by Helm)", sj.Name, sj.Labels, r.name)
		}
		if sj.Spec.HTTP == nil || sj.Spec.HTTP.URL != rc.URL()+"/"+sj.Name || sj.Spec.Schedule != everySecond {
			t.Errorf("ScheduledJob %s has spec %+v, want the item's", sj.Name, sj.Spec)
		}
	}
	slices.Sort(names)
	if want := []string{"hook-a", "hook-b"}; !slices.Equal(names, want) {
		t.Fatalf("kubectl get scheduledjobs -n %s lists %v, want %v", r.ns, names, want)
	}

	// kubectl apply adds one more, which runs beside the chart's.
	manifest := filepath.Join(t.TempDir(), "hook-c.json")
	b, err := json.Marshal(map[string]any{"apiVersion": spec.APIVersion, "kind": spec.KindName,
		"metadata": map[string]any{"name": "hook-c"}, "spec": httpJob(rc, "hook-c", "c {{.Key}}")["spec"]})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.mustTool(t, c.kubectl, "apply", "-n", r.ns, "-f", manifest)

	// The leader runs all three and writes each one's status: Ready for its
	// generation, and a last success.
	want := []string{"hook-a", "hook-b", "hook-c"}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var pending []string
		for _, name := range want {
			sj, err := r.scheduledJob(ctx, name)
			if err != nil {
				pending = append(pending, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			ready := meta.FindStatusCondition(sj.Status.Conditions, spec.ConditionReady)
			switch {
			case ready == nil || ready.Status != metav1.ConditionTrue || sj.Status.ObservedGeneration != sj.Generation:
				pending = append(pending, fmt.Sprintf("%s: Ready %+v, observed generation %d of %d", name, ready, sj.Status.ObservedGeneration, sj.Generation))
			case sj.Status.LastSuccessfulTime == nil:
				pending = append(pending, name+": no last success")
			case len(rc.Deliveries("/"+name)) == 0:
				pending = append(pending, name+": nothing delivered")
			}
		}
		last = strings.Join(pending, "; ")
		return len(pending) == 0, nil
	})
	if err != nil {
		t.Fatalf("the ScheduledJobs did not all run with their status written within a minute (leader %s): %s", leader, last)
	}
	t.Logf("hook-a, hook-b (helm) and hook-c (kubectl apply) delivering, status written by %s (%s)", leader, time.Since(began).Round(time.Millisecond))

	// The ServiceAccount's permissions, from the chart's Role.
	sj := "scheduledjobs.leasecron.io"
	noBatchJobs := []permission{
		{"create", "jobs.batch", false},
		{"get", "jobs.batch", false},
		{"list", "jobs.batch", false},
		{"delete", "jobs.batch", false},
	}
	r.checkPermissions(t, append([]permission{
		{"get", sj, true},
		{"list", sj, true},
		{"watch", sj, true},
		{"get", sj + "/hook-c", true},
		{"update", sj, false},
		{"patch", sj, false},
		{"create", sj, false},
		{"delete", sj, false},
		{"deletecollection", sj, false},
		{"create", "events", true},
		{"get", "secrets", false},
		{"list", "secrets", false},
		{"watch", "secrets", false},
		{"get", "secrets/" + r.fullname + "-db", false},
		{"create", "pods", false},
		{"get", "customresourcedefinitions.apiextensions.k8s.io", false},
	}, noBatchJobs...))
	r.checkPermissions(t, []permission{
		{"patch", sj, true},
		{"update", sj, true},
		{"get", sj, false},
	}, "--subresource=status")
	r.checkPermissions(t, []permission{
		{"get", sj, false},
		{"list", sj, false},
		{"watch", sj, false},
		{"create", "events", false},
		{"get", "leases.coordination.k8s.io/" + r.fullname, false},
	}, "-n", "default")
	r.checkPermissions(t, []permission{{"patch", sj, false}}, "-n", "default", "--subresource=status")
	// The same with a real token: the ScheduledJobs can be listed, not
	// changed.
	as := dynamic.NewForConfigOrDie(r.serviceAccountConfig(t)).Resource(clustersource.Resource)
	l, err := as.Namespace(r.ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != len(want) {
		t.Errorf("listing ScheduledJobs with the ServiceAccount's token: %v items, err %v; want %d", len(l.Items), err, len(want))
	} else {
		o := l.Items[0].DeepCopy()
		o.SetLabels(map[string]string{"changed": "by-the-controller"})
		if _, err := as.Namespace(r.ns).Update(ctx, o, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("updating ScheduledJob %s with the ServiceAccount's token: err = %v, want Forbidden", o.GetName(), err)
		}
	}
	if _, err := as.Namespace("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing ScheduledJobs in namespace default with the ServiceAccount's token: err = %v, want Forbidden", err)
	}

	// kubernetesJob.enabled adds the batch Jobs verbs, in this namespace only.
	c.mustTool(t, c.helm, "upgrade", r.name, chartDir(), "-n", r.ns, "--reuse-values",
		"-f", r.values(map[string]any{"kubernetesJob": map[string]any{"enabled": true}}), "--wait", "--timeout", "2m")
	r.checkPermissions(t, []permission{
		{"create", "jobs.batch", true},
		{"get", "jobs.batch", true},
		{"list", "jobs.batch", true},
		{"watch", "jobs.batch", true},
		{"delete", "jobs.batch", true},
		{"update", "jobs.batch", false},
		{"patch", "jobs.batch", false},
		{"create", "cronjobs.batch", false},
		{"create", "pods", false},
		{"get", "secrets", false},
		{"get", sj, true},
		{"patch", sj, false},
	})
	r.checkPermissions(t, noBatchJobs, "-n", "default")
	r.waitPods(t, 2)
	r.waitLeader(t, "", 30*time.Second)

	// Every job ran only through the ledger, and nothing was refused for
	// want of a permission.
	var runs []jobs.JobRun
	if err := r.db.Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	perJob := map[string]int{}
	for _, run := range runs {
		perJob[run.Job]++
		if !slices.Contains(want, run.Job) {
			t.Errorf("job_runs has a row for job %q", run.Job)
		}
	}
	r.mu.Lock()
	for _, w := range r.warnings {
		if strings.Contains(strings.ToLower(w), "forbidden") {
			t.Errorf("a controller was refused a request: %s", w)
		}
	}
	r.mu.Unlock()
	t.Logf("job_runs rows per job: %v; step took %s", perJob, time.Since(began).Round(time.Millisecond))
	r.checkObserved(t)
}
