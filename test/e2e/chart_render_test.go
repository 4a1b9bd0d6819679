package e2e

import (
	"fmt"
	"testing"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

// renderChart runs helm template on the chart with values and returns the
// rendered objects.
func renderChart(t *testing.T, values map[string]any) []map[string]any {
	t.Helper()
	objs, err := kube.RenderChart(chartDir(), "jobs", values)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// renderedOne converts the one rendered object of kind into into, refusing
// fields its API type does not have.
func renderedOne(t *testing.T, objs []map[string]any, kind string, into any) {
	t.Helper()
	if err := decodeOne(objs, kind, into); err != nil {
		t.Fatal(err)
	}
}

// decodeOne is renderedOne's check as an error: exactly one object of kind,
// converted into into without a field its API type does not have.
func decodeOne(objs []map[string]any, kind string, into any) error {
	var found []map[string]any
	for _, o := range objs {
		if o["kind"] == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		return fmt.Errorf("the chart rendered %d objects of kind %s, want 1", len(found), kind)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(found[0], into, true); err != nil {
		return fmt.Errorf("rendered %s: %w", kind, err)
	}
	return nil
}

// TestChartPDBLetsDrainEvictUnreadyPods: while the database is down every
// replica is unready, and a PodDisruptionBudget with the default
// unhealthyPodEvictionPolicy would refuse every eviction, hanging
// `kubectl drain` for the whole outage; the chart's allows evicting them.
func TestChartPDBLetsDrainEvictUnreadyPods(t *testing.T) {
	objs := renderChart(t, map[string]any{"database": map[string]any{"dsn": "mysql://u:p@db:3306/app"}})
	var pdb policyv1.PodDisruptionBudget
	renderedOne(t, objs, "PodDisruptionBudget", &pdb)
	if p := pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
		t.Fatalf("PodDisruptionBudget unhealthyPodEvictionPolicy = %v, want %s", p, policyv1.AlwaysAllow)
	}
}
