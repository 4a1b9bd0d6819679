package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

// TestChartRejectsBadValues: values the chart refuses, by its strict schema
// or by a check in its templates, each with a message naming the problem.
// Nothing is installed: helm template fails before rendering.
func TestChartRejectsBadValues(t *testing.T) {
	helm, err := kube.ToolPath("helm")
	if err != nil {
		t.Fatal(err)
	}
	dsn := []string{"--set", "database.dsn=mysql://u:p@db:3306/app"}
	// job is the values with one job, "a", of this spec (JSON).
	job := func(spec string) []string {
		return append(dsn, "--set-json", `jobs.items=[{"name":"a","spec":`+spec+`}]`)
	}
	// moved is what the chart says of a jobs value of chart 0.1.x (a list).
	const moved = "leasecron: jobs is a map since chart 0.2.0: move your list of jobs to jobs.items, and set jobs.source to cluster (the default: ScheduledJob objects) or file (the jobs ConfigMap, as before)"
	volume := func(volumes, mounts string) []string {
		return append(dsn, "--set-json", "extraVolumes="+volumes, "--set-json", "extraVolumeMounts="+mounts)
	}
	secretVolume := `[{"name":"billing","secret":{"secretName":"billing"}}]`
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"misspelt key", append(dsn, "--set", "replicaCont=2"), "additional properties 'replicaCont' not allowed"},
		{"no replicas", append(dsn, "--set", "replicaCount=0"), "at '/replicaCount': minimum: got 0, want 1"},
		{"duration as a number", append(dsn, "--set", "leaderElection.leaseDuration=15"), "at '/leaderElection/leaseDuration': got number, want string"},
		{"schedule for an unknown job", append(dsn, "--set", "schedules.weekly=@weekly"), "invalid propertyName 'weekly'"},
		{"empty schedule", append(dsn, "--set", "schedules.daily-stats="), "at '/schedules/daily-stats': minLength: got 0, want 1"},
		{"schedule as a number", append(dsn, "--set-json", "schedules.daily-stats=5"), "at '/schedules/daily-stats': got number, want null or string"},
		{"empty time zone", append(dsn, "--set", "timezone="), "at '/timezone': minLength: got 0, want 1"},
		{"unknown pull policy", append(dsn, "--set", "image.pullPolicy=Sometimes"), "value must be one of 'Always', 'IfNotPresent', 'Never'"},
		{"unknown log format", append(dsn, "--set", "logFormat=xml"), "at '/logFormat': value must be one of 'json', 'text'"},
		{"no database", nil, "a database is required: set database.dsn"},
		{"grace period too short", append(dsn, "--set", "shutdownGracePeriod=60s"), "terminationGracePeriodSeconds (45) must be greater than shutdownGracePeriod"},
		{"lease duration not whole seconds", append(dsn, "--set", "leaderElection.leaseDuration=15500ms"), "leaderElection.leaseDuration (15500ms) must be a whole number of seconds, as a Lease records it"},
		{"renew deadline above lease", append(dsn, "--set", "leaderElection.renewDeadline=20s"), "leaderElection.leaseDuration (15s) must be greater than leaderElection.renewDeadline (20s)"},
		{"Role for an unnamed account", append(dsn, "--set", "serviceAccount.create=false"), "with serviceAccount.create=false set serviceAccount.name"},
		{"job of two kinds", job(`{"schedule":"@daily","dailyStats":{},"sql":{"statements":["SELECT 1"]}}`), "at '/jobs/items/0/spec': 'oneOf' failed, subschemas 0, 2 matched"},
		{"job of no kind", job(`{"schedule":"@daily"}`), "at '/jobs/items/0/spec': 'oneOf' failed, none matched"},
		{"job of an unknown kind", job(`{"schedule":"@daily","cobol":{}}`), "at '/jobs/items/0/spec': additional properties 'cobol' not allowed"},
		{"job without a schedule", job(`{"dailyStats":{}}`), "at '/jobs/items/0/spec': missing property 'schedule'"},
		{"job name not a DNS label", append(dsn, "--set-json", `jobs.items=[{"name":"Bad_Name","spec":{"schedule":"@daily","dailyStats":{}}}]`), "at '/jobs/items/0/name': 'Bad_Name' does not match pattern"},
		{"job name too long", append(dsn, "--set-json", `jobs.items=[{"name":"`+strings.Repeat("a", 64)+`","spec":{"schedule":"@daily","dailyStats":{}}}]`), "at '/jobs/items/0/name': maxLength: got 64, want 63"},
		{"zero catch-up limit", job(`{"schedule":"@daily","catchUp":{"limit":0},"dailyStats":{}}`), "at '/jobs/items/0/spec/catchUp/limit': minimum: got 0, want 1"},
		{"negative catch-up limit", job(`{"schedule":"@daily","catchUp":{"limit":-3},"dailyStats":{}}`), "at '/jobs/items/0/spec/catchUp/limit': minimum: got -3, want 1"},
		{"zero retries limit", job(`{"schedule":"@daily","retries":{"limit":0},"dailyStats":{}}`), "at '/jobs/items/0/spec/retries/limit': minimum: got 0, want 1"},
		{"job duration in words", job(`{"schedule":"@daily","timeout":"10 minutes","dailyStats":{}}`), "at '/jobs/items/0/spec/timeout': '10 minutes' does not match pattern"},
		{"backoff duration as a number", job(`{"schedule":"@daily","retries":{"backoff":{"max":60}},"dailyStats":{}}`), "at '/jobs/items/0/spec/retries/backoff/max': got number, want string"},
		{"empty sql statement", job(`{"schedule":"@daily","sql":{"statements":[""]}}`), "at '/jobs/items/0/spec/sql/statements/0': minLength: got 0, want 1"},
		{"http url not http", job(`{"schedule":"@daily","http":{"url":"ftp://x"}}`), "at '/jobs/items/0/spec/http/url': 'ftp://x' does not match pattern '^https?://'"},
		{"http header from file and env", job(`{"schedule":"@daily","http":{"url":"https://x","headersFrom":[{"name":"A","file":"/f","env":"E"}]}}`), "at '/jobs/items/0/spec/http/headersFrom/0': 'oneOf' failed, subschemas 0, 1 matched"},
		{"http success code out of range", job(`{"schedule":"@daily","http":{"url":"https://x","successCodes":[600]}}`), "at '/jobs/items/0/spec/http/successCodes/0': maximum: got 600, want 599"},
		{"duplicate job name", append(dsn, "--set-json", `jobs.items=[{"name":"nightly","spec":{"schedule":"@daily","dailyStats":{}}},{"name":"nightly","spec":{"schedule":"@hourly","dailyStats":{}}}]`),
			`jobs.items[1].name: job "nightly" is already defined by jobs.items[0]; job names key the ledger and must be unique: rename one of them`},
		{"duplicate job name, file source", append(dsn, "--set", "jobs.source=file", "--set-json", `jobs.items=[{"name":"nightly","spec":{"schedule":"@daily","dailyStats":{}}},{"name":"nightly","spec":{"schedule":"@hourly","dailyStats":{}}}]`),
			`jobs.items[1].name: job "nightly" is already defined by jobs.items[0]`},
		{"job named like a built-in schedule", append(dsn, "--set-json", `jobs.items=[{"name":"daily-stats","spec":{"schedule":"@daily","dailyStats":{}}}]`),
			`jobs.items[0].name: job "daily-stats" is also defined by schedules.daily-stats`},
		{"jobs as a list (chart 0.1.x)", append(dsn, "--set-json", `jobs=[{"name":"a","spec":{"schedule":"@daily","dailyStats":{}}}]`), moved},
		{"jobs as an empty list", append(dsn, "--set-json", `jobs=[]`), moved},
		{"jobs as a list in a values file", append(dsn, "-f", jobsListValues(t)), moved},
		{"unknown jobs source", append(dsn, "--set", "jobs.source=configmap"), "at '/jobs/source': value must be one of 'cluster', 'file'"},
		{"unknown key under jobs", append(dsn, "--set", "jobs.sources=file"), "at '/jobs': additional properties 'sources' not allowed"},
		{"command job while off", job(`{"schedule":"@daily","command":{"args":["/bin/true"]}}`),
			`jobs.items[0].spec.command: command jobs are off: set allowCommandJobs=true to run them`},
		{"kubernetes job while off", job(`{"schedule":"@daily","kubernetesJob":{"template":{"spec":{}}}}`),
			`jobs.items[0].spec.kubernetesJob: Kubernetes Jobs are off: set kubernetesJob.enabled=true to run them`},
		{"command without args", append(job(`{"schedule":"@daily","command":{"args":[]}}`), "--set", "allowCommandJobs=true"), "at '/jobs/items/0/spec/command/args': minItems: got 0, want 1"},
		{"command with an empty program", append(job(`{"schedule":"@daily","command":{"args":[""]}}`), "--set", "allowCommandJobs=true"), "at '/jobs/items/0/spec/command/args/0': minLength: got 0, want 1"},
		{"command env from value and file", append(job(`{"schedule":"@daily","command":{"args":["x"],"env":[{"name":"A","value":"v","file":"/f"}]}}`), "--set", "allowCommandJobs=true"), "at '/jobs/items/0/spec/command/env/0': 'not' failed"},
		{"kubernetes job without a template", append(job(`{"schedule":"@daily","kubernetesJob":{}}`), "--set", "kubernetesJob.enabled=true"), "at '/jobs/items/0/spec/kubernetesJob': missing property 'template'"},
		{"kubernetes job template without a spec", append(job(`{"schedule":"@daily","kubernetesJob":{"template":{"metadata":{}}}}`), "--set", "kubernetesJob.enabled=true"), "at '/jobs/items/0/spec/kubernetesJob/template': missing property 'spec'"},
		{"allowCommandJobs as a string", append(dsn, "--set-json", `allowCommandJobs="yes"`), "at '/allowCommandJobs': got string, want boolean"},
		{"unknown key under kubernetesJob", append(dsn, "--set", "kubernetesJob.enable=true"), "at '/kubernetesJob': additional properties 'enable' not allowed"},
		{"extra volume without a source", volume(`[{"name":"billing"}]`, `[]`), "at '/extraVolumes/0': minProperties: got 1, want 2"},
		{"extra volume of two sources", volume(`[{"name":"billing","secret":{},"configMap":{}}]`, `[]`), "at '/extraVolumes/0': maxProperties: got 3, want 2"},
		{"extra volume of an unknown source", volume(`[{"name":"billing","secrett":{}}]`, `[]`), "at '/extraVolumes/0': additional properties 'secrett' not allowed"},
		{"extra volume named like the chart's", volume(`[{"name":"dsn","secret":{"secretName":"x"}}]`, `[]`), `extraVolumes[0].name: "dsn" is the name of one of the chart's own volumes`},
		{"extra mount without a path", volume(secretVolume, `[{"name":"billing"}]`), "at '/extraVolumeMounts/0': missing property 'mountPath'"},
		{"extra mount at a relative path", volume(secretVolume, `[{"name":"billing","mountPath":"secrets"}]`), "at '/extraVolumeMounts/0/mountPath': 'secrets' does not match pattern '^/'"},
		{"extra mount with an unknown key", volume(secretVolume, `[{"name":"billing","mountPath":"/s","readonly":true}]`), "at '/extraVolumeMounts/0': additional properties 'readonly' not allowed"},
		{"extra mount over the DSN", volume(secretVolume, `[{"name":"billing","mountPath":"/etc/leasecron/db"}]`), "extraVolumeMounts[0].mountPath: /etc/leasecron/db is at, above or inside /etc/leasecron/db, where the chart mounts its dsn volume"},
		{"extra mount inside the jobs", volume(secretVolume, `[{"name":"billing","mountPath":"/etc/leasecron/jobs/billing"}]`), "extraVolumeMounts[0].mountPath: /etc/leasecron/jobs/billing is at, above or inside /etc/leasecron/jobs, where the chart mounts its jobs volume"},
		{"extra mount above the chart's", volume(secretVolume, `[{"name":"billing","mountPath":"/etc/leasecron/"}]`), "extraVolumeMounts[0].mountPath: /etc/leasecron/ is at, above or inside /etc/leasecron/"},
		{"extra mount over /tmp", volume(secretVolume, `[{"name":"billing","mountPath":"/tmp"}]`), "extraVolumeMounts[0].mountPath: /tmp is at, above or inside /tmp, where the chart mounts its tmp volume"},
		{"common label the chart sets", append(dsn, "--set", "commonLabels.app\\.kubernetes\\.io/name=mine"),
			"leasecron: commonLabels.app.kubernetes.io/name: the chart sets this label itself (and selects its Pods by some of them): remove it from commonLabels"},
		{"common label not a string", append(dsn, "--set-json", `commonLabels={"tier":1}`), "at '/commonLabels/tier': got number, want string"},
		{"negative revisionHistoryLimit", append(dsn, "--set", "revisionHistoryLimit=-1"), "at '/revisionHistoryLimit': minimum: got -1, want 0"},
		{"envFrom of no source", append(dsn, "--set-json", `envFrom=[{"prefix":"A_"}]`), "at '/envFrom/0': 'oneOf' failed, none matched"},
		{"envFrom without a name", append(dsn, "--set-json", `envFrom=[{"secretRef":{}}]`), "at '/envFrom/0/secretRef': missing property 'name'"},
		{"network policy without database ports", append(dsn, "--set-json", `networkPolicy={"enabled":true,"database":{"ports":[]}}`), "at '/networkPolicy/database/ports': minItems: got 0, want 1"},
		{"network policy port out of range", append(dsn, "--set-json", `networkPolicy={"apiServer":{"ports":[{"port":70000}]}}`), "at '/networkPolicy/apiServer/ports/0/port': 'oneOf' failed"},
		{"network policy empty peer", append(dsn, "--set-json", `networkPolicy={"database":{"to":[{}]}}`), "at '/networkPolicy/database/to/0': minProperties: got 0, want 1"},
		{"network policy peer misspelt", append(dsn, "--set-json", `networkPolicy={"metrics":{"from":[{"ipblock":{"cidr":"10.0.0.0/8"}}]}}`), "at '/networkPolicy/metrics/from/0': additional properties 'ipblock' not allowed"},
		{"network policy ipBlock without cidr", append(dsn, "--set-json", `networkPolicy={"dns":{"to":[{"ipBlock":{}}]}}`), "at '/networkPolicy/dns/to/0/ipBlock': missing property 'cidr'"},
		{"unknown relabel action", append(dsn, "--set-json", `serviceMonitor={"relabelings":[{"action":"rename"}]}`), "at '/serviceMonitor/relabelings/0/action': value must be one of"},
		{"unknown key under service", append(dsn, "--set", "service.annotation.a=b"), "at '/service': additional properties 'annotation' not allowed"},
		{"upgrade to source cluster without the CRD", append(dsn, "--is-upgrade"), "leasecron: jobs.source=cluster needs the ScheduledJob CRD, which helm upgrade does not install: apply it first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(helm, append([]string{"template", "x", chartDir()}, tc.args...)...).CombinedOutput()
			if err == nil {
				t.Fatalf("helm template accepted %v", tc.args)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("helm template %v said:\n%s\nwant it to contain %q", tc.args, out, tc.want)
			}
		})
	}
	// What the checks above must not refuse.
	for _, args := range [][]string{
		dsn,
		append(job(`{"schedule":"@daily","command":{"args":["/bin/true"],"env":[{"name":"A","file":"/f"},{"name":"B"}]}}`), "--set", "allowCommandJobs=true"),
		append(job(`{"schedule":"@daily","kubernetesJob":{"template":{"spec":{}}}}`), "--set", "kubernetesJob.enabled=true"),
		volume(secretVolume, `[{"name":"billing","mountPath":"/etc/leasecron/secrets/billing","readOnly":true},{"name":"billing","mountPath":"/tmp/billing"},{"name":"billing","mountPath":"/etc/leasecron/dbx"}]`),
		append(dsn, "--is-upgrade", "--api-versions", "leasecron.io/v1alpha1/ScheduledJob"),
		append(dsn, "--is-upgrade", "--set", "jobs.source=file"),
	} {
		if out, err := exec.Command(helm, append([]string{"template", "x", chartDir()}, args...)...).CombinedOutput(); err != nil {
			t.Errorf("helm template %v: %v\n%s", args, err, out)
		}
	}
}

// jobsListValues writes a values file of chart 0.1.x, where jobs was the
// list of jobs, and returns its path.
func jobsListValues(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values-0.1.yaml")
	if err := os.WriteFile(f, []byte("jobs:\n  - name: nightly\n    spec: {schedule: '@daily', dailyStats: {}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
