package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"path"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The jobs file the chart points the controller at, and where it mounts the
// jobs ConfigMap (release "x" of renderChart).
const (
	chartJobsFile      = "/etc/leasecron/jobs/jobs.yaml"
	chartJobsConfigMap = "x-leasecron-jobs"
)

// chartJobs are two jobs of different kinds, with every field of the spec
// between them; the http body is there to survive being embedded in the
// ConfigMap (several lines, a colon, quotes, a YAML 1.1 boolean word, a blank
// line, leading spaces).
func chartJobs() []any {
	return []any{
		map[string]any{"name": "nightly-rollup", "spec": map[string]any{
			"schedule": "0 5 * * *",
			"timeZone": "Europe/Berlin",
			"suspend":  false,
			"catchUp":  map[string]any{"window": "48h", "limit": 100},
			"timeout":  "10m",
			"retries":  map[string]any{"limit": 5, "backoff": map[string]any{"initial": "1s", "max": "1m"}},
			"sql": map[string]any{"statements": []any{
				"INSERT INTO daily_rollup (day, total) SELECT @slot_date, count(*) FROM orders " +
					"WHERE created_at >= @prev_slot AND created_at < @slot ON CONFLICT (day) DO NOTHING",
			}},
		}},
		map[string]any{"name": "ping-billing", "spec": map[string]any{
			"schedule": "@every 15m",
			"http": map[string]any{
				"url":             "https://billing.internal/hooks/tick",
				"method":          "POST",
				"headers":         map[string]any{"X-Source": "leasecron", "X-Flag": "yes"},
				"headersFrom":     []any{map[string]any{"name": "Authorization", "file": "/var/run/secrets/billing/token", "prefix": "Bearer "}},
				"body":            "{\"slot\": \"{{.Slot}}\",\n  \"note\": \"a: b\"}\n\n  indented: no\n",
				"successCodes":    []any{200, 204},
				"timeout":         "30s",
				"followRedirects": false,
			},
		}},
	}
}

// chartJobsValues are the values with a DSN and these jobs, read from source
// (jobs.source: "cluster" or "file").
func chartJobsValues(source string, jobs []any) map[string]any {
	return map[string]any{"database": map[string]any{"dsn": "mysql://u:p@db:3306/app"},
		"jobs": map[string]any{"source": source, "items": jobs}}
}

// controllerContainer is the Deployment's leasecron container.
func controllerContainer(t *testing.T, dep *appsv1.Deployment) *corev1.Container {
	t.Helper()
	for i := range dep.Spec.Template.Spec.Containers {
		if c := &dep.Spec.Template.Spec.Containers[i]; c.Name == "leasecron" {
			return c
		}
	}
	t.Fatal("the Deployment has no leasecron container")
	return nil
}

// envVars are the container's variables called name, in order (more than
// one is a mistake the callers report).
func envVars(c *corev1.Container, name string) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, e := range c.Env {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// wantEnv fails unless the container sets name exactly once, to the literal
// value want; want "" means that it does not set name at all.
func wantEnv(t *testing.T, c *corev1.Container, name, want string) {
	t.Helper()
	got := envVars(c, name)
	switch {
	case want == "" && len(got) != 0:
		t.Errorf("%s is set: %+v, want it absent", name, got)
	case want != "" && (len(got) != 1 || got[0].ValueFrom != nil || got[0].Value != want):
		t.Errorf("%s is %+v, want the one value %q", name, got, want)
	}
}

// jsonValue is v as encoding/json gives it back (numbers as float64), the form
// the decoded jobs file is compared in.
func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestChartJobsRender: with jobs.source=file, jobs.items become one
// ScheduledJob document per job in the ConfigMap's jobs.yaml, exactly as given; the Deployment mounts
// the ConfigMap as a directory (a subPath mount is never updated by the
// kubelet), beside the DSN Secret rather than inside it, and points
// LEASECRON_JOBS_FILE at the file in it; and changing the
// jobs changes nothing in the Pod template, so `helm upgrade` with edited jobs
// rolls no Pod: the running controller picks the edit up from the file.
func TestChartJobsRender(t *testing.T) {
	jobs := chartJobs()
	objs := renderChart(t, chartJobsValues("file", jobs))

	var cm corev1.ConfigMap
	renderedOne(t, objs, "ConfigMap", &cm)
	if cm.Name != chartJobsConfigMap {
		t.Errorf("the jobs ConfigMap is named %q, want %q", cm.Name, chartJobsConfigMap)
	}
	if got := cm.Labels["app.kubernetes.io/instance"]; got != "x" {
		t.Errorf("the jobs ConfigMap's app.kubernetes.io/instance label = %q, want x (the chart's labels)", got)
	}
	if len(cm.Data) != 1 || cm.Data["jobs.yaml"] == "" || len(cm.BinaryData) != 0 {
		t.Fatalf("the jobs ConfigMap's data is %v (binaryData %v), want only jobs.yaml", cm.Data, cm.BinaryData)
	}
	file := cm.Data["jobs.yaml"]
	var docs []map[string]any
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(file), 4096)
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("jobs.yaml does not parse as YAML documents: %v\n%s", err, file)
		}
		docs = append(docs, d)
	}
	if len(docs) != len(jobs) {
		t.Fatalf("jobs.yaml holds %d documents, want %d (one per job):\n%s", len(docs), len(jobs), file)
	}
	for i, j := range jobs {
		j := j.(map[string]any)
		want := jsonValue(t, map[string]any{
			"apiVersion": "leasecron.io/v1alpha1",
			"kind":       "ScheduledJob",
			"metadata":   map[string]any{"name": j["name"]},
			"spec":       j["spec"],
		})
		if got := jsonValue(t, docs[i]); !reflect.DeepEqual(got, want) {
			g, _ := json.MarshalIndent(got, "", "  ")
			w, _ := json.MarshalIndent(want, "", "  ")
			t.Errorf("jobs.yaml document %d:\n%s\nwant:\n%s", i, g, w)
		}
	}

	var dep appsv1.Deployment
	renderedOne(t, objs, "Deployment", &dep)
	var vol string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == chartJobsConfigMap {
			if len(v.ConfigMap.Items) != 0 {
				t.Errorf("volume %q projects items %v: want the whole ConfigMap", v.Name, v.ConfigMap.Items)
			}
			vol = v.Name
		}
	}
	if vol == "" {
		t.Fatalf("the Deployment has no volume of ConfigMap %s: %+v", chartJobsConfigMap, dep.Spec.Template.Spec.Volumes)
	}
	c := controllerContainer(t, &dep)
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == vol {
			if mount != nil {
				t.Fatalf("volume %q is mounted twice", vol)
			}
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Fatalf("the leasecron container does not mount volume %q", vol)
	}
	if mount.SubPath != "" || mount.SubPathExpr != "" {
		t.Errorf("the jobs volume is mounted with subPath %q / subPathExpr %q: the kubelet never updates those, so edits would not reach running Pods", mount.SubPath, mount.SubPathExpr)
	}
	if !mount.ReadOnly {
		t.Error("the jobs volume is mounted read-write")
	}
	if got, want := mount.MountPath, path.Dir(chartJobsFile); got != want {
		t.Errorf("the jobs volume is mounted at %q, want %q", got, want)
	}
	// No mount inside another: the DSN Secret and the jobs ConfigMap are
	// read-only volumes, and a mount point nested in one must be made inside
	// it by the kubelet (some runtimes cannot start such a Pod at all).
	for _, a := range c.VolumeMounts {
		for _, b := range c.VolumeMounts {
			if a.Name != b.Name && strings.HasPrefix(path.Clean(b.MountPath)+"/", path.Clean(a.MountPath)+"/") {
				t.Errorf("volume %q is mounted at %s, inside volume %q at %s", b.Name, b.MountPath, a.Name, a.MountPath)
			}
		}
	}
	// jobs.yaml in the mounted directory.
	wantEnv(t, c, "LEASECRON_JOBS_FILE", path.Join(mount.MountPath, "jobs.yaml"))
	wantEnv(t, c, "LEASECRON_JOBS_SOURCE", "file")
	for _, o := range objs {
		if o["kind"] == "ScheduledJob" {
			t.Errorf("with jobs.source=file the chart rendered a ScheduledJob object: %v", o["metadata"])
		}
	}

	// Adding jobs adds no Pod template annotation (no checksum of the
	// ConfigMap), and editing them changes nothing in the Pod template.
	var plain appsv1.Deployment
	renderedOne(t, renderChart(t, chartJobsValues("file", nil)), "Deployment", &plain)
	if got, want := dep.Spec.Template.Annotations, plain.Spec.Template.Annotations; !reflect.DeepEqual(got, want) {
		t.Errorf("with jobs the Pod template annotations are %v, without %v: a checksum of the jobs would restart the Pods on every edit", got, want)
	}
	edited := chartJobs()
	edited[0].(map[string]any)["spec"].(map[string]any)["schedule"] = "0 6 * * *"
	edited = append(edited, map[string]any{"name": "stats-again", "spec": map[string]any{"schedule": "@daily", "dailyStats": map[string]any{}}})
	editedObjs := renderChart(t, chartJobsValues("file", edited))
	var cm2 corev1.ConfigMap
	renderedOne(t, editedObjs, "ConfigMap", &cm2)
	if cm2.Data["jobs.yaml"] == file {
		t.Fatal("editing the jobs did not change jobs.yaml")
	}
	wantSamePodTemplate(t, &dep, editedObjs)
}

// wantSamePodTemplate fails if the Deployment rendered in objs has another Pod
// template than dep: editing the jobs must restart no Pod.
func wantSamePodTemplate(t *testing.T, dep *appsv1.Deployment, objs []map[string]any) {
	t.Helper()
	var edited appsv1.Deployment
	renderedOne(t, objs, "Deployment", &edited)
	if !reflect.DeepEqual(dep.Spec.Template, edited.Spec.Template) {
		a, _ := json.MarshalIndent(dep.Spec.Template, "", "  ")
		b, _ := json.MarshalIndent(edited.Spec.Template, "", "  ")
		t.Errorf("editing the jobs changed the Pod template, which restarts every Pod:\nbefore: %s\nafter: %s", a, b)
	}
}

// TestChartJobsFileOnlyForFileSourceRender: without jobs in a file (the
// default, source cluster, with or without items; or source file with no
// items) the chart renders no jobs ConfigMap, no volume, no mount and no
// LEASECRON_JOBS_FILE (which the controller refuses beside source cluster).
func TestChartJobsFileOnlyForFileSourceRender(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"default":             {"database": map[string]any{"dsn": "mysql://u:p@db:3306/app"}},
		"file, no items":      chartJobsValues("file", []any{}),
		"cluster, with items": chartJobsValues("cluster", chartJobs()),
		"cluster, no items":   chartJobsValues("cluster", []any{}),
	} {
		t.Run(name, func(t *testing.T) {
			objs := renderChart(t, values)
			for _, o := range objs {
				if o["kind"] == "ConfigMap" {
					t.Errorf("the chart rendered a ConfigMap without a jobs file: %v", o["metadata"])
				}
			}
			var dep appsv1.Deployment
			renderedOne(t, objs, "Deployment", &dep)
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.ConfigMap != nil || v.Name == "jobs" {
					t.Errorf("the Deployment has volume %+v without a jobs file", v)
				}
			}
			c := controllerContainer(t, &dep)
			for _, m := range c.VolumeMounts {
				if m.Name == "jobs" || strings.HasPrefix(m.MountPath, path.Dir(chartJobsFile)) {
					t.Errorf("the leasecron container mounts %+v without a jobs file", m)
				}
			}
			wantEnv(t, c, "LEASECRON_JOBS_FILE", "")
		})
	}
}

// TestChartJobsReplaceTheBuiltinJobRender: a job of the user's may take the
// built-in job's name once `schedules` leaves it out (a null removes a key of
// a map default; `schedules: {}` would not), from either source.
func TestChartJobsReplaceTheBuiltinJobRender(t *testing.T) {
	for _, source := range []string{"file", "cluster"} {
		t.Run(source, func(t *testing.T) {
			values := chartJobsValues(source, []any{map[string]any{"name": "daily-stats", "spec": map[string]any{"schedule": "0 10 * * *", "dailyStats": map[string]any{}}}})
			values["schedules"] = map[string]any{"daily-stats": nil}
			objs := renderChart(t, values)
			if source == "file" {
				var cm corev1.ConfigMap
				renderedOne(t, objs, "ConfigMap", &cm)
				if !strings.Contains(cm.Data["jobs.yaml"], "name: daily-stats") {
					t.Errorf("jobs.yaml does not define daily-stats:\n%s", cm.Data["jobs.yaml"])
				}
			} else if sjs := renderedScheduledJobs(t, objs); len(sjs) != 1 || sjs[0].Name != "daily-stats" || sjs[0].Spec.DailyStats == nil {
				t.Errorf("the ScheduledJobs rendered are %+v, want the one daily-stats", sjs)
			}
			var dep appsv1.Deployment
			renderedOne(t, objs, "Deployment", &dep)
			if got := envVars(controllerContainer(t, &dep), "LEASECRON_SCHEDULE"); len(got) != 1 || got[0].Value != "" || got[0].ValueFrom != nil {
				t.Errorf("LEASECRON_SCHEDULE is %+v with schedules.daily-stats removed, want the one value \"\"", got)
			}
		})
	}
}
