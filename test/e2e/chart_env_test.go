package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestChartPodEnvConfiguresEveryCommand: the controller container carries
// its configuration as LEASECRON_* variables, so the commands an operator
// runs in the Pod (`kubectl exec … -- /leasecron status`, `once`) follow the
// chart's schedules and time zone, not the built-in ones. The commands run
// with exactly the container's environment; only the DSN Secret's mount is
// mapped to a directory of the test's.
func TestChartPodEnvConfiguresEveryCommand(t *testing.T) {
	const (
		expr = "0 30 4 * * *" // 04:30:00 daily; the built-in schedule is 00:00:50
		zone = "Asia/Shanghai"
	)
	objs := renderChart(t, map[string]any{
		"database":  map[string]any{"dsn": "mysql://u:p@db:3306/app"},
		"schedules": map[string]any{"daily-stats": expr},
		"timezone":  zone,
	})
	var dep appsv1.Deployment
	renderedOne(t, objs, "Deployment", &dep)
	var c *corev1.Container
	for i := range dep.Spec.Template.Spec.Containers {
		if dep.Spec.Template.Spec.Containers[i].Name == "leasecron" {
			c = &dep.Spec.Template.Spec.Containers[i]
		}
	}
	if c == nil {
		t.Fatal("the Deployment has no leasecron container")
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			if strings.HasPrefix(e.Name, "LEASECRON_") {
				t.Fatalf("%s comes from %v: this test can only pass on literal values", e.Name, e.ValueFrom)
			}
			continue // the downward API and GOMEMLIMIT: not leasecron configuration
		}
		env[e.Name] = e.Value
	}
	if got, want := env["LEASECRON_SCHEDULE"], "daily-stats="+expr; got != want {
		t.Errorf("LEASECRON_SCHEDULE = %q, want %q", got, want)
	}
	if got := env["LEASECRON_TIMEZONE"]; got != zone {
		t.Errorf("LEASECRON_TIMEZONE = %q, want %q", got, zone)
	}

	// The DSN file, under the Secret's mount, points at a SQLite database.
	dir := t.TempDir()
	var mount string
	for _, m := range c.VolumeMounts {
		if m.Name == "dsn" {
			mount = m.MountPath
		}
	}
	dsnFile := env["LEASECRON_DATABASE_DSN_FILE"]
	if mount == "" || !strings.HasPrefix(dsnFile, mount+"/") {
		t.Fatalf("LEASECRON_DATABASE_DSN_FILE = %q is not under the dsn volume's mount %q", dsnFile, mount)
	}
	env["LEASECRON_DATABASE_DSN_FILE"] = filepath.Join(dir, "secret", strings.TrimPrefix(dsnFile, mount))
	if err := os.MkdirAll(filepath.Dir(env["LEASECRON_DATABASE_DSN_FILE"]), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env["LEASECRON_DATABASE_DSN_FILE"], []byte("sqlite://"+filepath.Join(dir, "leasecron.db")), 0o600); err != nil {
		t.Fatal(err)
	}
	environ := []string{"HOME=" + dir}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	leasecron := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, args...)
		cmd.Env, cmd.Dir = environ, dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("leasecron %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr.String())
		}
		return string(out)
	}
	leasecron("migrate")

	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	// The chart's slot at or after t: 04:30 in Shanghai.
	slotAfter := func(t time.Time) time.Time {
		t = t.In(loc)
		s := time.Date(t.Year(), t.Month(), t.Day(), 4, 30, 0, 0, loc)
		if !s.After(t) {
			s = s.AddDate(0, 0, 1)
		}
		return s
	}
	before := time.Now()
	out := leasecron("status")
	after := time.Now()
	var next string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "daily-stats" {
			if _, rest, ok := strings.Cut(line, " next "); ok {
				next, _, _ = strings.Cut(strings.TrimSpace(rest), ",")
			}
		}
	}
	if w1, w2 := slotAfter(before).Format(time.RFC3339), slotAfter(after).Format(time.RFC3339); next != w1 && next != w2 {
		t.Errorf("status in the Pod shows daily-stats next at %q, want %s (the chart's schedule in %s):\n%s", next, w1, zone, out)
	}

	// once --date claims that date's slot of the chart's schedule.
	day := before.In(loc).AddDate(0, 0, -2)
	slot := time.Date(day.Year(), day.Month(), day.Day(), 4, 30, 0, 0, loc)
	out = leasecron("once", "daily-stats", "--date", day.Format(time.DateOnly))
	if want := "daily-stats " + slot.Format(time.RFC3339) + ": succeeded"; !strings.Contains(out, want) {
		t.Errorf("once --date %s in the Pod said %q, want %q", day.Format(time.DateOnly), out, want)
	}
}
