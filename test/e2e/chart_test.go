package e2e

import (
	"os/exec"
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
		return append(dsn, "--set-json", `jobs=[{"name":"a","spec":`+spec+`}]`)
	}
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
		{"job of two kinds", job(`{"schedule":"@daily","dailyStats":{},"sql":{"statements":["SELECT 1"]}}`), "at '/jobs/0/spec': 'oneOf' failed, subschemas 0, 2 matched"},
		{"job of no kind", job(`{"schedule":"@daily"}`), "at '/jobs/0/spec': 'oneOf' failed, none matched"},
		{"job of an unknown kind", job(`{"schedule":"@daily","cobol":{}}`), "at '/jobs/0/spec': additional properties 'cobol' not allowed"},
		{"job without a schedule", job(`{"dailyStats":{}}`), "at '/jobs/0/spec': missing property 'schedule'"},
		{"job name not a DNS label", append(dsn, "--set-json", `jobs=[{"name":"Bad_Name","spec":{"schedule":"@daily","dailyStats":{}}}]`), "at '/jobs/0/name': 'Bad_Name' does not match pattern"},
		{"job name too long", append(dsn, "--set-json", `jobs=[{"name":"`+strings.Repeat("a", 64)+`","spec":{"schedule":"@daily","dailyStats":{}}}]`), "at '/jobs/0/name': maxLength: got 64, want 63"},
		{"zero catch-up limit", job(`{"schedule":"@daily","catchUp":{"limit":0},"dailyStats":{}}`), "at '/jobs/0/spec/catchUp/limit': minimum: got 0, want 1"},
		{"negative catch-up limit", job(`{"schedule":"@daily","catchUp":{"limit":-3},"dailyStats":{}}`), "at '/jobs/0/spec/catchUp/limit': minimum: got -3, want 1"},
		{"zero retries limit", job(`{"schedule":"@daily","retries":{"limit":0},"dailyStats":{}}`), "at '/jobs/0/spec/retries/limit': minimum: got 0, want 1"},
		{"job duration in words", job(`{"schedule":"@daily","timeout":"10 minutes","dailyStats":{}}`), "at '/jobs/0/spec/timeout': '10 minutes' does not match pattern"},
		{"backoff duration as a number", job(`{"schedule":"@daily","retries":{"backoff":{"max":60}},"dailyStats":{}}`), "at '/jobs/0/spec/retries/backoff/max': got number, want string"},
		{"empty sql statement", job(`{"schedule":"@daily","sql":{"statements":[""]}}`), "at '/jobs/0/spec/sql/statements/0': minLength: got 0, want 1"},
		{"http url not http", job(`{"schedule":"@daily","http":{"url":"ftp://x"}}`), "at '/jobs/0/spec/http/url': 'ftp://x' does not match pattern '^https?://'"},
		{"http header from file and env", job(`{"schedule":"@daily","http":{"url":"https://x","headersFrom":[{"name":"A","file":"/f","env":"E"}]}}`), "at '/jobs/0/spec/http/headersFrom/0': 'oneOf' failed, subschemas 0, 1 matched"},
		{"http success code out of range", job(`{"schedule":"@daily","http":{"url":"https://x","successCodes":[600]}}`), "at '/jobs/0/spec/http/successCodes/0': maximum: got 600, want 599"},
		{"duplicate job name", append(dsn, "--set-json", `jobs=[{"name":"nightly","spec":{"schedule":"@daily","dailyStats":{}}},{"name":"nightly","spec":{"schedule":"@hourly","dailyStats":{}}}]`),
			`jobs[1].name: job "nightly" is already defined by jobs[0]; job names key the ledger and must be unique: rename one of them`},
		{"job named like a built-in schedule", append(dsn, "--set-json", `jobs=[{"name":"daily-stats","spec":{"schedule":"@daily","dailyStats":{}}}]`),
			`jobs[0].name: job "daily-stats" is also defined by schedules.daily-stats`},
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
	if out, err := exec.Command(helm, append([]string{"template", "x", chartDir()}, dsn...)...).CombinedOutput(); err != nil {
		t.Fatalf("the defaults with a DSN do not render: %v\n%s", err, out)
	}
}
