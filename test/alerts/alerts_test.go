// Package alerts tests the chart's alerting rules with promtool against
// series the controller itself produced.
//
// The rules are the chart's PrometheusRule as `helm template` renders it
// (files/alerts.yaml, verbatim). Each scenario runs the real leasecron
// binary (filelock mode, SQLite) and scrapes every process's /metrics once a
// second while things happen to it: a per-second job that succeeds, then
// fails for good; a per-second job whose slot runs 15 seconds; a leader that
// is stopped (SIGSTOP) while a standby waits,
// then resumes past its catch-up limit; two leaders (two lock files, one
// database); leadership handed on five times. The scrapes become promtool
// input series (time dilated: one real second is one minute of promtool's,
// see series_test.go), and the expectations say which alert fires, with
// which labels and annotations, at which step, and that none fires while the
// controller is healthy. promtool check rules and promtool test rules run on
// the result. promtool is built from the Go module proxy by
// hack/tools/build.sh promtool when missing (minutes on a cold cache).
package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/internal/testenv/testdb"
)

var binary string

func TestMain(m *testing.M) { testenv.MainWithLeasecron(m, &binary) }

const chartDir = "../../charts/leasecron"

// rule is one alerting rule of the rendered PrometheusRule.
type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

// render renders the chart (with a DSN, which it requires) as the
// namespace leasecron, with values.
func render(values map[string]any) ([]map[string]any, error) {
	v := map[string]any{"database": map[string]any{"dsn": "mysql://u:p@db:3306/app"}}
	maps.Copy(v, values)
	return kube.RenderChart(chartDir, "leasecron", v)
}

// renderRules renders the chart's PrometheusRule with values and returns
// its groups.
func renderRules(t *testing.T, values map[string]any) []ruleGroup {
	t.Helper()
	objs, err := render(values)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o["kind"] != "PrometheusRule" {
			continue
		}
		b, err := json.Marshal(o["spec"])
		if err != nil {
			t.Fatal(err)
		}
		var spec struct {
			Groups []ruleGroup `json:"groups"`
		}
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		return spec.Groups
	}
	t.Fatal("the chart rendered no PrometheusRule")
	return nil
}

// promtool's unit test file.
type promFile struct {
	RuleFiles          []string     `json:"rule_files"`
	EvaluationInterval string       `json:"evaluation_interval"`
	Tests              []*promGroup `json:"tests"`
}

type promGroup struct {
	Name          string              `json:"name"`
	Interval      string              `json:"interval"`
	InputSeries   []map[string]string `json:"input_series"`
	AlertRuleTest []alertTest         `json:"alert_rule_test"`
}

type alertTest struct {
	EvalTime  string     `json:"eval_time"`
	Alertname string     `json:"alertname"`
	ExpAlerts []expAlert `json:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `json:"exp_labels"`
	ExpAnnotations map[string]string `json:"exp_annotations"`
}

// suite builds the promtool tests of the scenarios against rules.
type suite struct {
	t      *testing.T
	rules  map[string]rule
	groups []*promGroup
	// families are the metric families the scenarios' processes exported.
	families map[string]bool
}

var labelRef = regexp.MustCompile(`\{\{ *\$labels\.([a-zA-Z_][a-zA-Z0-9_]*) *\}\}`)

// expect says that at step the alert fires exactly for the label sets given
// (none: it does not fire). Each set is the alert's labels from its
// expression; the rule's own labels are added, and its annotations expanded
// as Prometheus would.
func (s *suite) expect(g *promGroup, at int, alert string, sets ...map[string]string) {
	s.t.Helper()
	r, ok := s.rules[alert]
	if !ok {
		s.t.Fatalf("the chart has no alert %s", alert)
	}
	exps := []expAlert{}
	for _, set := range sets {
		labels := maps.Clone(set)
		maps.Copy(labels, r.Labels)
		ann := map[string]string{}
		for k, v := range r.Annotations {
			ann[k] = labelRef.ReplaceAllStringFunc(v, func(m string) string { return labels[labelRef.FindStringSubmatch(m)[1]] })
			if strings.Contains(ann[k], "{{") {
				s.t.Fatalf("%s's %s uses more than $labels: %q", alert, k, v)
			}
		}
		exps = append(exps, expAlert{ExpLabels: labels, ExpAnnotations: ann})
	}
	g.AlertRuleTest = append(g.AlertRuleTest, alertTest{EvalTime: minutes(at), Alertname: alert, ExpAlerts: exps})
}

// quiet says that no alert but those named fires at step.
func (s *suite) quiet(g *promGroup, at int, except ...string) {
	s.t.Helper()
	for _, a := range slices.Sorted(maps.Keys(s.rules)) {
		if !slices.Contains(except, a) {
			s.expect(g, at, a)
		}
	}
}

func (s *suite) add(name string, rec *recorder) *promGroup {
	rec.mu.Lock()
	maps.Copy(s.families, rec.families)
	rec.mu.Unlock()
	g := &promGroup{Name: name, Interval: "1m", InputSeries: rec.inputSeries()}
	s.groups = append(s.groups, g)
	return g
}

// The chart's alerts fire on the controller's own series when they should
// and stay quiet while it is healthy.
func TestAlertRulesOnTheControllersSeries(t *testing.T) {
	promtool, err := kube.BuildTool("promtool")
	if err != nil {
		t.Fatal(err)
	}
	groups := renderRules(t, map[string]any{"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}}})
	s := &suite{t: t, rules: map[string]rule{}, families: map[string]bool{}}
	for _, g := range groups {
		for _, r := range g.Rules {
			s.rules[r.Alert] = r
		}
	}
	t.Run("job fails for good", func(t *testing.T) { scenarioFailing(t, s) })
	t.Run("slot runs past the next", func(t *testing.T) { scenarioOverdue(t, s) })
	t.Run("leader stopped", func(t *testing.T) { scenarioStopped(t, s) })
	t.Run("two leaders", func(t *testing.T) { scenarioTwoLeaders(t, s) })
	t.Run("flapping", func(t *testing.T) { scenarioFlapping(t, s) })
	if t.Failed() {
		return
	}
	for _, f := range []string{"alerts.yaml", "dashboard.json"} {
		for _, n := range metricNames(t, filepath.Join(chartDir, "files", f)) {
			if !s.families[n] {
				t.Errorf("files/%s reads %s, which the controller does not export", f, n)
			}
		}
	}

	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	writeYAML(t, rulesFile, map[string]any{"groups": groups})
	testFile := filepath.Join(dir, "test.yaml")
	writeYAML(t, testFile, promFile{RuleFiles: []string{rulesFile}, EvaluationInterval: "1m", Tests: s.groups})
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", testFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			keep := filepath.Join(os.TempDir(), "leasecron-alerts-test.yaml")
			_ = os.WriteFile(keep, mustRead(t, testFile), 0o644)
			t.Fatalf("promtool %s: %v\n%s\n(the test file is kept at %s)", strings.Join(args, " "), err, out, keep)
		}
		t.Logf("promtool %s: %s", strings.Join(args, " "), bytes.TrimSpace(out))
	}
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// world is one scenario's database, jobs file and processes.
type world struct {
	t     *testing.T
	dir   string
	dsn   string
	fleet *testenv.Fleet
	rec   *recorder
	// args are added to every process's run flags.
	args []string
}

// tickJob is a per-second sql job that counts its slots in a table the
// test can take away; extra adds spec fields.
func tickJob(extra string) string {
	return `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata:
  name: tick
spec:
  schedule: "* * * * * *"
  timeout: 2s
  retries: {limit: 1}
` + extra + `  sql:
    statements: ["UPDATE counters SET n = n + 1 WHERE name = 'tick'"]
`
}

func newWorld(t *testing.T, jobs string) *world {
	dir := t.TempDir()
	w := &world{t: t, dir: dir, dsn: "sqlite://" + filepath.Join(dir, "ledger.db"), fleet: testenv.NewFleet(t, binary)}
	db := testdb.Open(t, w.dsn)
	for _, q := range []string{"CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)", "INSERT INTO counters VALUES ('tick', 0)"} {
		if err := db.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "jobs.yaml"), []byte(jobs), 0o644); err != nil {
		t.Fatal(err)
	}
	w.rec = newRecorder(t)
	return w
}

// start starts process name on lock file lock and scrapes it from its
// first round; it returns once the process serves /metrics.
func (w *world) start(name, lock string) {
	w.t.Helper()
	w.fleet.Start(name, append([]string{"run", "--mode", "filelock", "--lock-file", filepath.Join(w.dir, lock),
		"--database-dsn", w.dsn, "--jobs-file", filepath.Join(w.dir, "jobs.yaml"), "--timezone", "UTC",
		"--http-addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace-period", "2s"}, w.args...)...)
	e := w.fleet.Await(60*time.Second, name+"'s http address", func(e testenv.Event) bool {
		return e.Proc == name && e.Msg == "http server listening"
	})
	w.rec.add(name, fmt.Sprint(e.Attrs["addr"]))
}

// awaitLeading waits for name to lead and run a slot.
func (w *world) awaitLeading(name string) {
	w.t.Helper()
	w.fleet.Await(60*time.Second, name+" to lead and run a slot", func(e testenv.Event) bool {
		return e.Proc == name && e.Msg == "slot succeeded"
	})
}

// terminate stops name with SIGTERM and waits for it to exit.
func (w *world) terminate(name string) {
	w.t.Helper()
	p := w.fleet.Procs()[name]
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		w.t.Fatal(err)
	}
	<-p.Done
	w.rec.remove(name)
}

func (w *world) signal(name string, sig syscall.Signal) {
	w.t.Helper()
	if err := w.fleet.Procs()[name].Cmd.Process.Signal(sig); err != nil {
		w.t.Fatal(err)
	}
}

// target is the labels a series of process name carries, with extra.
func target(name string, extra ...string) map[string]string {
	l := maps.Clone(targetLabels)
	l["instance"], l["pod"] = name, name
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i]] = extra[i+1]
	}
	return l
}

// release is the labels of an alert over all of the release's replicas.
func release() map[string]string { return maps.Clone(targetLabels) }

// A per-second job runs healthily, then every slot fails for good (its
// table is gone): the slot-failed alert fires, and once its last success is
// more than two intervals old for 5 minutes, the last-success alert too.
func scenarioFailing(t *testing.T, s *suite) {
	w := newWorld(t, tickJob(""))
	w.start("p1", "leasecron.lock")
	w.awaitLeading("p1")
	healthy := w.rec.await(8) - 1
	db := testdb.Open(t, w.dsn)
	if err := db.Exec("DROP TABLE counters").Error; err != nil {
		t.Fatal(err)
	}
	w.fleet.Await(30*time.Second, "a slot to fail for good", func(e testenv.Event) bool {
		return e.Proc == "p1" && strings.HasPrefix(e.Msg, "slot failed, giving up")
	})
	failing := w.rec.await(12) - 1
	w.terminate("p1")
	w.rec.finish()

	g := s.add("job fails for good", w.rec)
	s.quiet(g, healthy)
	s.expect(g, failing, "LeasecronJobSlotFailed", target("p1", "scheduled_job", "tick", "result", "failed"))
	s.expect(g, failing, "LeasecronJobLastSuccessTooOld", target("p1", "scheduled_job", "tick"))
	s.quiet(g, failing, "LeasecronJobSlotFailed", "LeasecronJobLastSuccessTooOld")
}

// A per-second job whose slot runs for 15 seconds (a command: sleep): no
// job overlaps itself, so its next slot passes unstarted and the overdue
// alert fires; nothing else does (it never succeeded, and nothing failed).
func scenarioOverdue(t *testing.T, s *suite) {
	w := newWorld(t, `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata:
  name: slow
spec:
  schedule: "* * * * * *"
  timeout: 30s
  command:
    args: [sleep, "15"]
`)
	w.args = []string{"--allow-command-jobs"}
	w.start("p1", "leasecron.lock")
	w.fleet.Await(60*time.Second, "p1 to lead", func(e testenv.Event) bool { return e.Proc == "p1" && e.Msg == "leading" })
	early := w.rec.await(2) - 1
	late := w.rec.await(9) - 1
	w.terminate("p1")
	w.rec.finish()

	g := s.add("slot runs past the next", w.rec)
	s.quiet(g, early)
	s.expect(g, late, "LeasecronJobOverdue", target("p1", "scheduled_job", "slow"))
	s.quiet(g, late, "LeasecronJobOverdue")
}

// The leader is stopped (SIGSTOP: it keeps its lock, answers no scrape)
// while a standby waits: no replica leads, and the no-leader alert fires;
// nothing about the jobs does (the stopped leader's series are stale).
// Resumed after more slots than its catch-up limit, it runs the most recent
// two and reports the rest missed.
func scenarioStopped(t *testing.T, s *suite) {
	w := newWorld(t, tickJob("  catchUp: {limit: 2}\n"))
	w.start("p1", "leasecron.lock")
	w.awaitLeading("p1")
	w.start("p2", "leasecron.lock")
	healthy := w.rec.await(5) - 1
	w.signal("p1", syscall.SIGSTOP)
	stopped := w.rec.await(8) - 1
	w.signal("p1", syscall.SIGCONT)
	w.fleet.Await(30*time.Second, "p1 to report missed slots", func(e testenv.Event) bool {
		return e.Proc == "p1" && strings.HasPrefix(e.Msg, "slots missed")
	})
	resumed := w.rec.await(3) - 1
	w.terminate("p1")
	w.terminate("p2")
	w.rec.finish()

	g := s.add("leader stopped", w.rec)
	s.quiet(g, healthy)
	s.expect(g, stopped, "LeasecronNoLeader", release())
	s.quiet(g, stopped, "LeasecronNoLeader")
	s.expect(g, resumed, "LeasecronJobMissedSlots", target("p1", "scheduled_job", "tick"))
	s.quiet(g, resumed, "LeasecronJobMissedSlots")
}

// Two replicas with lock files of their own (two hosts, one database) both
// lead: the two-leaders alert fires. The ledger still runs each slot once.
func scenarioTwoLeaders(t *testing.T, s *suite) {
	w := newWorld(t, tickJob(""))
	w.start("p1", "a.lock")
	w.awaitLeading("p1")
	healthy := w.rec.await(2) - 1
	w.start("p2", "b.lock")
	w.fleet.Await(60*time.Second, "p2 to lead too", func(e testenv.Event) bool { return e.Proc == "p2" && e.Msg == "leading" })
	both := w.rec.await(5) - 1
	w.terminate("p1")
	w.terminate("p2")
	w.rec.finish()

	g := s.add("two leaders", w.rec)
	s.quiet(g, healthy)
	s.expect(g, both, "LeasecronTwoLeaders", release())
}

// Leadership is handed on five times (the leader terminated, a standby
// takes over): the flapping alert fires; no-leader does not (each handover
// takes milliseconds).
func scenarioFlapping(t *testing.T, s *suite) {
	w := newWorld(t, tickJob(""))
	w.start("p0", "leasecron.lock")
	w.awaitLeading("p0")
	healthy := w.rec.await(2) - 1
	for i := 1; i <= 5; i++ {
		next := fmt.Sprintf("p%d", i)
		w.start(next, "leasecron.lock")
		w.rec.await(2) // the standby is scraped before it leads
		w.terminate(fmt.Sprintf("p%d", i-1))
		w.awaitLeading(next)
	}
	flapped := w.rec.await(2) - 1
	w.terminate("p5")
	w.rec.finish()

	g := s.add("flapping", w.rec)
	s.quiet(g, healthy)
	s.expect(g, flapped, "LeasecronLeadershipFlapping", release())
	s.expect(g, flapped, "LeasecronNoLeader")
}
