package e2e

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/leasecron/leasecron/pkg/spec"
)

// chartKindJobs are one job of each kind that needs a switch: command
// (allowCommandJobs) and kubernetesJob (kubernetesJob.enabled).
func chartKindJobs() []any {
	return []any{
		map[string]any{"name": "rollup-cmd", "spec": map[string]any{
			"schedule": "@hourly",
			"command": map[string]any{
				"args":        []any{"/usr/local/bin/rollup", "--slot", "$(LEASECRON_SLOT)"},
				"env":         []any{map[string]any{"name": "MODE", "value": "fast"}, map[string]any{"name": "TOKEN", "file": "/etc/leasecron/secrets/rollup/token"}},
				"workingDir":  "/tmp",
				"gracePeriod": "5s",
			},
		}},
		map[string]any{"name": "export-job", "spec": map[string]any{
			"schedule": "0 3 * * *",
			"kubernetesJob": map[string]any{
				"template": map[string]any{
					"metadata": map[string]any{"labels": map[string]any{"team": "data"}},
					"spec": map[string]any{"backoffLimit": 2, "template": map[string]any{"spec": map[string]any{
						"restartPolicy": "Never",
						"containers":    []any{map[string]any{"name": "export", "image": "registry.example/export:1", "args": []any{"--all"}}},
					}}},
				},
				"successfulJobsHistoryLimit": 3,
				"failedJobsHistoryLimit":     1,
			},
		}},
	}
}

// renderedScheduledJobs are the rendered ScheduledJob objects, converted
// strictly (a field the spec type does not have fails the test).
func renderedScheduledJobs(t *testing.T, objs []map[string]any) []spec.ScheduledJob {
	t.Helper()
	var out []spec.ScheduledJob
	for _, o := range objs {
		if o["kind"] != spec.KindName {
			continue
		}
		var sj spec.ScheduledJob
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o, &sj, true); err != nil {
			t.Fatalf("rendered ScheduledJob %v: %v", o["metadata"], err)
		}
		out = append(out, sj)
	}
	return out
}

// TestChartJobsClusterRender: with jobs.source=cluster (the default) each of
// jobs.items is one ScheduledJob object, named after it, in the release
// namespace, with the chart's labels and exactly the spec given (every kind,
// the switched ones with their switch on); no jobs ConfigMap; the controller
// is told LEASECRON_JOBS_SOURCE=cluster; and editing the items changes
// nothing in the Pod template, so no Pod restarts for it.
func TestChartJobsClusterRender(t *testing.T) {
	items := append(chartJobs(), chartKindJobs()...)
	values := func(items []any) map[string]any {
		v := chartJobsValues("cluster", items)
		delete(v["jobs"].(map[string]any), "source") // the default
		v["allowCommandJobs"] = true
		v["kubernetesJob"] = map[string]any{"enabled": true}
		return v
	}
	objs := renderChart(t, values(items))

	var dep appsv1.Deployment
	renderedOne(t, objs, "Deployment", &dep)
	var sjs []map[string]any
	for _, o := range objs {
		switch o["kind"] {
		case "ConfigMap":
			t.Errorf("with jobs.source=cluster the chart rendered a ConfigMap: %v", o["metadata"])
		case spec.KindName:
			sjs = append(sjs, o)
		}
	}
	typed := renderedScheduledJobs(t, objs)
	if len(sjs) != len(items) {
		t.Fatalf("the chart rendered %d ScheduledJobs, want %d (one per item)", len(sjs), len(items))
	}
	for i, item := range items {
		item := item.(map[string]any)
		o, sj := sjs[i], typed[i]
		if o["apiVersion"] != spec.APIVersion {
			t.Errorf("ScheduledJob %d has apiVersion %v, want %s", i, o["apiVersion"], spec.APIVersion)
		}
		if sj.Name != item["name"] || sj.Namespace != "jobs" {
			t.Errorf("ScheduledJob %d is %s/%s, want jobs/%s (the item's name, in the release namespace)", i, sj.Namespace, sj.Name, item["name"])
		}
		if !reflect.DeepEqual(sj.Labels, dep.Labels) {
			t.Errorf("ScheduledJob %s has labels %v, want the chart's %v", sj.Name, sj.Labels, dep.Labels)
		}
		if got, want := jsonValue(t, o["spec"]), jsonValue(t, item["spec"]); !reflect.DeepEqual(got, want) {
			g, _ := json.MarshalIndent(got, "", "  ")
			w, _ := json.MarshalIndent(want, "", "  ")
			t.Errorf("ScheduledJob %s spec:\n%s\nwant:\n%s", sj.Name, g, w)
		}
		if n := len(sj.Spec.Kinds()); n != 1 {
			t.Errorf("ScheduledJob %s has kinds %v, want exactly one", sj.Name, sj.Spec.Kinds())
		}
	}

	c := controllerContainer(t, &dep)
	wantEnv(t, c, "LEASECRON_JOBS_SOURCE", "cluster")
	wantEnv(t, c, "LEASECRON_JOBS_FILE", "")

	edited := values(items[1:])
	edited["jobs"].(map[string]any)["items"] = append(edited["jobs"].(map[string]any)["items"].([]any),
		map[string]any{"name": "stats-again", "spec": map[string]any{"schedule": "@daily", "dailyStats": map[string]any{}}})
	editedObjs := renderChart(t, edited)
	if got := renderedScheduledJobs(t, editedObjs); len(got) != len(items) || got[0].Name != "ping-billing" || got[len(got)-1].Name != "stats-again" {
		t.Fatalf("after the edit the ScheduledJobs are %v, want ping-billing … stats-again", got)
	}
	wantSamePodTemplate(t, &dep, editedObjs)
}

// roleRules are the rules of the rendered Role, one `"group" resource verb
// [names]` line per verb, sorted.
func roleRules(t *testing.T, objs []map[string]any) []string {
	t.Helper()
	var role rbacv1.Role
	renderedOne(t, objs, "Role", &role)
	if role.Namespace != "jobs" {
		t.Errorf("the Role is in namespace %q, want the release's", role.Namespace)
	}
	var out []string
	for _, r := range role.Rules {
		if len(r.NonResourceURLs) != 0 {
			t.Errorf("the Role has a rule for non-resource URLs: %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					line := fmt.Sprintf("%q %s %s", g, res, v)
					if len(r.ResourceNames) > 0 {
						line += " " + strings.Join(r.ResourceNames, ",")
					}
					out = append(out, line)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestChartRoleRules: the Role grants exactly the Lease and Events rules,
// plus get/list/watch on scheduledjobs and update/patch on their status with
// jobs.source=cluster, plus create/get/list/watch/delete on batch jobs with
// kubernetesJob.enabled; never anything on Secrets, in every combination
// (allowCommandJobs adds nothing); and no Role at all with rbac.create=false.
func TestChartRoleRules(t *testing.T) {
	base := []string{
		`"" events create`,
		`"coordination.k8s.io" leases create`,
		`"coordination.k8s.io" leases get x-leasecron`,
		`"coordination.k8s.io" leases list x-leasecron`,
		`"coordination.k8s.io" leases update x-leasecron`,
		`"coordination.k8s.io" leases watch x-leasecron`,
	}
	scheduledJobs := []string{
		`"leasecron.io" scheduledjobs get`,
		`"leasecron.io" scheduledjobs list`,
		`"leasecron.io" scheduledjobs watch`,
		`"leasecron.io" scheduledjobs/status patch`,
		`"leasecron.io" scheduledjobs/status update`,
	}
	batchJobs := []string{
		`"batch" jobs create`,
		`"batch" jobs delete`,
		`"batch" jobs get`,
		`"batch" jobs list`,
		`"batch" jobs watch`,
	}
	for _, source := range []string{"cluster", "file"} {
		for _, kubeJobs := range []bool{false, true} {
			for _, commands := range []bool{false, true} {
				t.Run(fmt.Sprintf("source=%s,kubernetesJob=%v,allowCommandJobs=%v", source, kubeJobs, commands), func(t *testing.T) {
					values := chartJobsValues(source, nil)
					values["kubernetesJob"] = map[string]any{"enabled": kubeJobs}
					values["allowCommandJobs"] = commands
					want := slices.Clone(base)
					if source == "cluster" {
						want = append(want, scheduledJobs...)
					}
					if kubeJobs {
						want = append(want, batchJobs...)
					}
					slices.Sort(want)
					got := roleRules(t, renderChart(t, values))
					if !slices.Equal(got, want) {
						t.Errorf("the Role grants:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
					}
					for _, r := range got {
						if strings.Contains(r, "secrets") || strings.Contains(r, "*") {
							t.Errorf("the Role grants %q", r)
						}
					}
				})
			}
		}
	}
	// grantFinalizers adds update on scheduledjobs/finalizers, only where
	// Jobs are owned by ScheduledJobs: kubernetesJob on, cluster source.
	for _, source := range []string{"cluster", "file"} {
		for _, kubeJobs := range []bool{false, true} {
			t.Run(fmt.Sprintf("source=%s,kubernetesJob=%v,grantFinalizers=true", source, kubeJobs), func(t *testing.T) {
				values := chartJobsValues(source, nil)
				values["kubernetesJob"] = map[string]any{"enabled": kubeJobs, "grantFinalizers": true}
				got := roleRules(t, renderChart(t, values))
				want := source == "cluster" && kubeJobs
				if has := slices.Contains(got, `"leasecron.io" scheduledjobs/finalizers update`); has != want {
					t.Errorf("the Role grants update on scheduledjobs/finalizers: %v, want %v:\n  %s", has, want, strings.Join(got, "\n  "))
				}
			})
		}
	}
	t.Run("rbac.create=false", func(t *testing.T) {
		values := chartJobsValues("cluster", nil)
		values["kubernetesJob"] = map[string]any{"enabled": true}
		values["rbac"] = map[string]any{"create": false}
		for _, o := range renderChart(t, values) {
			if k := o["kind"]; k == "Role" || k == "RoleBinding" {
				t.Errorf("rbac.create=false rendered a %s", k)
			}
		}
	})
}

// TestChartKindSwitchesRender: allowCommandJobs and kubernetesJob.enabled
// reach the controller as LEASECRON_ALLOW_COMMAND_JOBS and
// LEASECRON_ALLOW_KUBERNETES_JOBS set to "true", each only when on (the
// controller's default is off).
func TestChartKindSwitchesRender(t *testing.T) {
	for _, tc := range []struct {
		name             string
		values           map[string]any
		commands, kubeJs string
	}{
		{"defaults", map[string]any{}, "", ""},
		{"both off", map[string]any{"allowCommandJobs": false, "kubernetesJob": map[string]any{"enabled": false}}, "", ""},
		{"commands", map[string]any{"allowCommandJobs": true}, "true", ""},
		{"kubernetes jobs", map[string]any{"kubernetesJob": map[string]any{"enabled": true}}, "", "true"},
		{"both", map[string]any{"allowCommandJobs": true, "kubernetesJob": map[string]any{"enabled": true}}, "true", "true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := chartJobsValues("cluster", nil)
			for k, v := range tc.values {
				values[k] = v
			}
			var dep appsv1.Deployment
			renderedOne(t, renderChart(t, values), "Deployment", &dep)
			c := controllerContainer(t, &dep)
			wantEnv(t, c, "LEASECRON_ALLOW_COMMAND_JOBS", tc.commands)
			wantEnv(t, c, "LEASECRON_ALLOW_KUBERNETES_JOBS", tc.kubeJs)
		})
	}
}

// TestChartExtraVolumesRender: extraVolumes are added to the Pod's volumes
// and extraVolumeMounts to the controller container's mounts, exactly as
// given, after the chart's own (which stay); the helm test Pod gets neither;
// and without them nothing is added.
func TestChartExtraVolumesRender(t *testing.T) {
	mode := int32(0o440)
	extraVolumes := []corev1.Volume{
		{Name: "billing", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "billing", DefaultMode: &mode}}},
		{Name: "rollup", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "rollup"}, Items: []corev1.KeyToPath{{Key: "token", Path: "token"}}}},
		}}}},
	}
	extraMounts := []corev1.VolumeMount{
		{Name: "billing", MountPath: "/etc/leasecron/secrets/billing", ReadOnly: true},
		{Name: "rollup", MountPath: "/etc/leasecron/secrets/rollup", ReadOnly: true},
	}
	plainValues := chartJobsValues("file", chartJobs())
	var plain appsv1.Deployment
	plainObjs := renderChart(t, plainValues)
	renderedOne(t, plainObjs, "Deployment", &plain)
	values := chartJobsValues("file", chartJobs())
	values["extraVolumes"] = jsonValue(t, extraVolumes)
	values["extraVolumeMounts"] = jsonValue(t, extraMounts)
	objs := renderChart(t, values)
	var dep appsv1.Deployment
	renderedOne(t, objs, "Deployment", &dep)

	own := plain.Spec.Template.Spec.Volumes
	if len(own) == 0 {
		t.Fatal("the chart's Pod has no volumes of its own")
	}
	if got, want := dep.Spec.Template.Spec.Volumes, append(slices.Clone(own), extraVolumes...); !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		w, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("the Pod's volumes are\n%s\nwant the chart's followed by extraVolumes:\n%s", g, w)
	}
	ownMounts := controllerContainer(t, &plain).VolumeMounts
	if got, want := controllerContainer(t, &dep).VolumeMounts, append(slices.Clone(ownMounts), extraMounts...); !reflect.DeepEqual(got, want) {
		t.Errorf("the controller's mounts are %+v, want the chart's followed by extraVolumeMounts: %+v", got, want)
	}

	// The helm test Pod runs leasecron verify, which reads no job's secrets.
	var pod, plainPod corev1.Pod
	renderedOne(t, objs, "Pod", &pod)
	renderedOne(t, plainObjs, "Pod", &plainPod)
	if !reflect.DeepEqual(pod.Spec.Volumes, plainPod.Spec.Volumes) {
		t.Errorf("extraVolumes changed the helm test Pod's volumes: %+v, without them %+v", pod.Spec.Volumes, plainPod.Spec.Volumes)
	}
}
