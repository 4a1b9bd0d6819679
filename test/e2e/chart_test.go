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
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"misspelt key", append(dsn, "--set", "replicaCont=2"), "additional properties 'replicaCont' not allowed"},
		{"no replicas", append(dsn, "--set", "replicaCount=0"), "at '/replicaCount': minimum: got 0, want 1"},
		{"duration as a number", append(dsn, "--set", "leaderElection.leaseDuration=15"), "at '/leaderElection/leaseDuration': got number, want string"},
		{"schedule for an unknown job", append(dsn, "--set", "schedules.weekly=@weekly"), "invalid propertyName 'weekly'"},
		{"empty time zone", append(dsn, "--set", "timezone="), "at '/timezone': minLength: got 0, want 1"},
		{"unknown pull policy", append(dsn, "--set", "image.pullPolicy=Sometimes"), "value must be one of 'Always', 'IfNotPresent', 'Never'"},
		{"unknown log format", append(dsn, "--set", "logFormat=xml"), "at '/logFormat': value must be one of 'json', 'text'"},
		{"no database", nil, "a database is required: set database.dsn"},
		{"grace period too short", append(dsn, "--set", "shutdownGracePeriod=60s"), "terminationGracePeriodSeconds (45) must be greater than shutdownGracePeriod"},
		{"lease duration not whole seconds", append(dsn, "--set", "leaderElection.leaseDuration=15500ms"), "leaderElection.leaseDuration (15500ms) must be a whole number of seconds, as a Lease records it"},
		{"renew deadline above lease", append(dsn, "--set", "leaderElection.renewDeadline=20s"), "leaderElection.leaseDuration (15s) must be greater than leaderElection.renewDeadline (20s)"},
		{"Role for an unnamed account", append(dsn, "--set", "serviceAccount.create=false"), "with serviceAccount.create=false set serviceAccount.name"},
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
