package alerts

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// fileRules reads files/alerts.yaml.
func fileRules(t *testing.T) []ruleGroup {
	t.Helper()
	var f struct {
		Groups []ruleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(mustRead(t, filepath.Join(chartDir, "files", "alerts.yaml")), &f); err != nil {
		t.Fatalf("files/alerts.yaml: %v", err)
	}
	return f.Groups
}

func alertNames(groups []ruleGroup) []string {
	var out []string
	for _, g := range groups {
		for _, r := range g.Rules {
			out = append(out, r.Alert)
		}
	}
	return out
}

func promRule(values map[string]any) map[string]any {
	return map[string]any{"metrics": map[string]any{"prometheusRule": values}}
}

// The PrometheusRule is files/alerts.yaml as it is, and each value changes
// what it says it changes.
func TestChartPrometheusRuleRender(t *testing.T) {
	file := fileRules(t)
	if got := renderRules(t, promRule(map[string]any{"enabled": true})); !reflect.DeepEqual(got, file) {
		t.Fatalf("the PrometheusRule's rules differ from files/alerts.yaml:\n got %+v\nwant %+v", got, file)
	}
	for _, r := range file[0].Rules {
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s has no summary or description", r.Alert)
		}
		anchor := "alert-" + strings.ToLower(r.Alert)
		if want := "https://github.com/leasecron/leasecron/blob/main/README.md#" + anchor; r.Annotations["runbook_url"] != want {
			t.Errorf("%s's runbook_url = %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
		}
		if !strings.Contains(string(mustRead(t, "../../README.md")), "\n#### Alert: "+r.Alert+"\n") {
			t.Errorf("README.md has no section %q (the runbook_url's anchor %s)", "#### Alert: "+r.Alert, anchor)
		}
	}

	got := renderRules(t, promRule(map[string]any{
		"enabled":         true,
		"disabled":        []string{"LeasecronJobMissedSlots"},
		"for":             map[string]any{"LeasecronNoLeader": "7m"},
		"severity":        map[string]any{"LeasecronJobSlotFailed": "page"},
		"ruleLabels":      map[string]any{"team": "payments", "severity": "ignored"},
		"additionalRules": []any{map[string]any{"alert": "Mine", "expr": "vector(1)"}},
	}))
	rules := map[string]rule{}
	for _, g := range got {
		for _, r := range g.Rules {
			rules[r.Alert] = r
		}
	}
	if _, ok := rules["LeasecronJobMissedSlots"]; ok {
		t.Error("a disabled alert is rendered")
	}
	if r := rules["LeasecronNoLeader"]; r.For != "7m" || r.Labels["severity"] != "critical" || r.Labels["team"] != "payments" {
		t.Errorf("LeasecronNoLeader = for %q labels %v, want for 7m, its own severity and team=payments", r.For, r.Labels)
	}
	if r := rules["LeasecronJobSlotFailed"]; r.Labels["severity"] != "page" {
		t.Errorf("LeasecronJobSlotFailed's severity = %q, want page", r.Labels["severity"])
	}
	if len(got) != 2 || got[1].Name != "leasecron-additional" || len(got[1].Rules) != 1 || got[1].Rules[0].Alert != "Mine" {
		t.Errorf("additionalRules: groups %+v, want the file's and leasecron-additional with Mine", got)
	}

	if _, err := render(promRule(map[string]any{"enabled": true, "for": map[string]any{"LeasecronNoLeadr": "5m"}})); err == nil || !strings.Contains(err.Error(), "LeasecronNoLeadr") {
		t.Errorf("a misspelt alert name renders (err %v), want a failure naming it", err)
	}
	objs, err := render(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o["kind"] == "PrometheusRule" || (o["kind"] == "ConfigMap" && strings.HasSuffix(name(o), "-dashboard")) {
			t.Errorf("the default values render a %s", o["kind"])
		}
	}
}

func name(o map[string]any) string {
	m, _ := o["metadata"].(map[string]any)
	n, _ := m["name"].(string)
	return n
}

// The values schema knows the alerts by name: the same list as the file.
func TestChartSchemaNamesTheAlerts(t *testing.T) {
	var schema struct {
		Properties struct {
			Metrics struct {
				Properties struct {
					PrometheusRule struct {
						Properties struct {
							Disabled struct {
								Items struct {
									Enum []string `json:"enum"`
								} `json:"items"`
							} `json:"disabled"`
							For struct {
								PropertyNames struct {
									Enum []string `json:"enum"`
								} `json:"propertyNames"`
							} `json:"for"`
							Severity struct {
								PropertyNames struct {
									Enum []string `json:"enum"`
								} `json:"propertyNames"`
							} `json:"severity"`
						} `json:"properties"`
					} `json:"prometheusRule"`
				} `json:"properties"`
			} `json:"metrics"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(mustRead(t, filepath.Join(chartDir, "values.schema.json")), &schema); err != nil {
		t.Fatal(err)
	}
	want := alertNames(fileRules(t))
	slices.Sort(want)
	p := schema.Properties.Metrics.Properties.PrometheusRule.Properties
	for field, enum := range map[string][]string{"disabled": p.Disabled.Items.Enum, "for": p.For.PropertyNames.Enum, "severity": p.Severity.PropertyNames.Enum} {
		got := slices.Sorted(slices.Values(enum))
		if !slices.Equal(got, want) {
			t.Errorf("values.schema.json metrics.prometheusRule.%s names %v, want the alerts of files/alerts.yaml %v", field, got, want)
		}
	}
}

// The dashboard ConfigMap carries files/dashboard.json as it is, with the
// sidecar's label (or the ones given) and annotations.
func TestChartDashboardRender(t *testing.T) {
	file := mustRead(t, filepath.Join(chartDir, "files", "dashboard.json"))
	if !json.Valid(file) {
		t.Fatal("files/dashboard.json is not JSON")
	}
	for _, tc := range []struct {
		values      map[string]any
		labels, ann map[string]string
	}{
		{map[string]any{"enabled": true}, map[string]string{"grafana_dashboard": "1"}, nil},
		{map[string]any{"enabled": true, "labels": map[string]any{"dash": "yes"}, "annotations": map[string]any{"grafana_folder": "ops"}},
			map[string]string{"dash": "yes"}, map[string]string{"grafana_folder": "ops"}},
	} {
		objs, err := render(map[string]any{"metrics": map[string]any{"grafanaDashboard": tc.values}})
		if err != nil {
			t.Fatal(err)
		}
		var cm map[string]any
		for _, o := range objs {
			if o["kind"] == "ConfigMap" && name(o) == "x-leasecron-dashboard" {
				cm = o
			}
		}
		if cm == nil {
			t.Fatalf("%v: no dashboard ConfigMap", tc.values)
		}
		meta := cm["metadata"].(map[string]any)
		labels, _ := meta["labels"].(map[string]any)
		for k, v := range tc.labels {
			if labels[k] != v {
				t.Errorf("%v: label %s = %v, want %q", tc.values, k, labels[k], v)
			}
		}
		ann, _ := meta["annotations"].(map[string]any)
		for k, v := range tc.ann {
			if ann[k] != v {
				t.Errorf("%v: annotation %s = %v, want %q", tc.values, k, ann[k], v)
			}
		}
		data := cm["data"].(map[string]any)
		if got := data["leasecron.json"]; got != strings.TrimRight(string(file), "\n") {
			t.Errorf("%v: the ConfigMap's leasecron.json is not files/dashboard.json", tc.values)
		}
	}
}

var metricName = regexp.MustCompile(`\bleasecron_[a-z_]+`)

// metricNames returns the leasecron_* names a rules or dashboard file reads
// (a histogram's _bucket series as the histogram).
func metricNames(t *testing.T, path string) []string {
	t.Helper()
	names := map[string]bool{}
	for _, n := range metricName.FindAllString(string(mustRead(t, path)), -1) {
		names[strings.TrimSuffix(n, "_bucket")] = true
	}
	return slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	})
}
