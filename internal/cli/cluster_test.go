package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/leasecron/leasecron/internal/cluster"
	"github.com/leasecron/leasecron/internal/testenv/kube"
)

// The commands other than run read a cluster's ScheduledJobs once with
// --jobs-source cluster (as kubectl exec … status does in a Pod, where the
// chart sets LEASECRON_JOBS_SOURCE): they see what the leader runs, and
// leave out, with a warning, what it refuses.
func TestCommandsReadTheClustersJobs(t *testing.T) {
	cp := kube.Start(t, kube.Options{})
	cp.InstallCRDs(t)
	client, err := dynamic.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{
		`{apiVersion: leasecron.io/v1alpha1, kind: ScheduledJob, metadata: {name: rollup}, spec: {schedule: "0 5 * * *", timeZone: UTC, sql: {statements: ["UPDATE t SET n = n + 1"]}}}`,
		`{apiVersion: leasecron.io/v1alpha1, kind: ScheduledJob, metadata: {name: broken}, spec: {schedule: "0 5 * * *", sql: {statements: ["UPDATE t SET n = @nope"]}}}`,
	} {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Resource(cluster.Resource).Namespace("default").Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := execute(t, map[string]string{"KUBECONFIG": cp.AdminKubeconfig(), "LEASECRON_JOBS_SOURCE": "cluster"}, "jobs", "-o", "json", "--next", "1")
	if code != 0 {
		t.Fatalf("jobs --jobs-source cluster: exit %d, stderr %s", code, stderr)
	}
	var doc jobsDoc
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("jobs -o json: %v\n%s", err, stdout)
	}
	listed := doc.Jobs
	if len(listed) != 1 || listed[0].Name != "rollup" {
		t.Fatalf("jobs listed %+v, want only rollup (daily-stats is not named by --schedule; broken is refused)", listed)
	}
	if !strings.Contains(stderr, "broken") || !strings.Contains(stderr, "@nope") {
		t.Fatalf("stderr %q does not say why broken is left out", stderr)
	}
	// Without any cluster configuration (the chart's env outside a Pod):
	// a warning, and the flags' jobs only; what needs only the database
	// still works.
	code, stdout, stderr = execute(t, map[string]string{"KUBECONFIG": "/nonexistent/kubeconfig", "KUBERNETES_SERVICE_HOST": ""}, "jobs", "--jobs-source", "cluster", "-o", "json", "--schedule", "daily-stats=@daily")
	if code != 0 || !strings.Contains(stderr, "no cluster here") || !strings.Contains(stdout, "daily-stats") || strings.Contains(stdout, "rollup") {
		t.Fatalf("jobs --jobs-source cluster without a cluster: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
