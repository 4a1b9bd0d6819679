package crd

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/pkg/commandjob"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/httpjob"
	"github.com/leasecron/leasecron/pkg/spec"
	"github.com/leasecron/leasecron/pkg/sqljob"
)

// The API types are runtime.Objects (zz_generated.deepcopy.go).
var (
	_ runtime.Object = &spec.ScheduledJob{}
	_ runtime.Object = &spec.ScheduledJobList{}
)

const namespace = "jobs"

var (
	jobsGVR = schema.GroupVersionResource{Group: "leasecron.io", Version: "v1alpha1", Resource: "scheduledjobs"}
	crdGVR  = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crdPath = filepath.Join("..", "..", "charts", "leasecron", "crds", "leasecron.io_scheduledjobs.yaml")
)

// cluster is a control plane (etcd and kube-apiserver) with kubectl.
type cluster struct {
	cp      *kube.ControlPlane
	kubectl string
	home    string
	dyn     dynamic.Interface
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	kubectl, err := kube.ToolPath("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	cp := kube.Start(t, kube.Options{})
	return &cluster{cp: cp, kubectl: kubectl, home: t.TempDir(), dyn: dynamic.NewForConfigOrDie(cp.AdminConfig())}
}

// run runs kubectl with the admin kubeconfig and stdin; err is its exit.
func (c *cluster) run(stdin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.cp.AdminKubeconfig(), "HOME="+c.home)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func (c *cluster) mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, stderr, err := c.run(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// get reads a ScheduledJob with the admin client.
func (c *cluster) get(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := c.dyn.Resource(jobsGVR).Namespace(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCRD(t *testing.T) {
	c := startCluster(t)
	if !t.Run("established", func(t *testing.T) { testEstablished(t, c) }) {
		t.FailNow()
	}
	t.Run("jobs", func(t *testing.T) { testJobs(t, c) })
	t.Run("columns", func(t *testing.T) { testColumns(t, c) })
	t.Run("status", func(t *testing.T) { testStatus(t, c) })
}

// testEstablished: the chart's CRD applies with kubectl, becomes Established
// and is served under its short name and category.
func testEstablished(t *testing.T, c *cluster) {
	b, err := os.ReadFile(crdPath)
	if err != nil {
		t.Fatal(err)
	}
	// Every field is typed (the Job template too): nothing is kept unchecked.
	if strings.Contains(string(b), "x-kubernetes-preserve-unknown-fields") {
		t.Errorf("%s preserves unknown fields somewhere: every field must be typed", crdPath)
	}
	c.mustRun(t, "", "apply", "-f", crdPath)
	ctx := context.Background()
	var names map[string]any
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		u, err := c.dyn.Resource(crdGVR).Get(ctx, "scheduledjobs.leasecron.io", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		names, _, _ = unstructured.NestedMap(u.Object, "status", "acceptedNames")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		established, accepted := false, false
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			switch {
			case m["type"] == "Established" && m["status"] == "True":
				established = true
			case m["type"] == "NamesAccepted" && m["status"] == "True":
				accepted = true
			}
		}
		return established && accepted, nil
	})
	if err != nil {
		t.Fatalf("the CRD is not Established and NamesAccepted: %v", err)
	}
	if got := names["shortNames"]; !equalJSON(got, []any{"sj"}) {
		t.Errorf("short names %v, want [sj]", got)
	}
	if got := names["categories"]; !equalJSON(got, []any{"leasecron"}) {
		t.Errorf("categories %v, want [leasecron]", got)
	}
	c.mustRun(t, "", "create", "namespace", namespace)
	// kubectl finds the resource by its short name and its category once
	// discovery serves it.
	for _, name := range []string{"sj", "leasecron", "scheduledjobs.leasecron.io"} {
		var stderr string
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			_, e, err := c.run("", "get", name, "-n", namespace)
			stderr = e
			return err == nil, nil
		})
		if err != nil {
			t.Errorf("kubectl get %s: %v\n%s", name, err, stderr)
		}
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// A case is one ScheduledJob document, what the API server says of it
// (kubectl apply, with its default strict field validation) and what the
// controller says (pkg/spec.Load and the kinds' Build): "" accepts, else a
// part of the message that refuses it.
type jobCase struct {
	name           string
	doc            string
	server, loader string
}

func job(name, specYAML string) string {
	return "apiVersion: leasecron.io/v1alpha1\nkind: ScheduledJob\nmetadata:\n  name: " + name + "\nspec: " + specYAML + "\n"
}

const kubernetesJob = `apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata:
  name: kubernetes-job
spec:
  schedule: "0 3 * * *"
  timeZone: America/New_York
  kubernetesJob:
    successfulJobsHistoryLimit: 3
    failedJobsHistoryLimit: 1
    template:
      metadata:
        labels: {app: rollup}
        annotations: {team: data}
      spec:
        backoffLimit: 2
        activeDeadlineSeconds: 600
        template:
          metadata:
            labels: {app: rollup}
          spec:
            restartPolicy: Never
            containers:
              - name: rollup
                image: busybox:1.36
                command: [sh, -c, 'echo "$LEASECRON_SLOT"']
                env: [{name: MODE, value: nightly}]
                resources: {limits: {cpu: 100m, memory: 64Mi}}
                securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false}
`

// cases: a valid job of each kind and edge cases both accept; what both
// refuse (the schema's message, then the loader's), among them every case
// of pkg/spec's TestBadInput a schema can express; and what only the
// controller refuses. TestBadInput's cases a schema cannot express:
//   - "not YAML": kubectl parses the file and never sends it;
//   - "wrong apiVersion", "wrong kind": the API server routes on them, so
//     another one is another resource (or none), never this schema's;
//   - "duplicate name": in a cluster a name is one object (a second apply
//     updates it).
//
// The controller also refuses what depends on where it runs, which no
// schema can know: a command job when --allow-command-jobs is off, a file
// or environment variable a job reads that it does not have, a program not
// on its PATH, and an sql statement its database's dialect cannot run.
func cases() []jobCase {
	long := strings.Repeat("a", 64)
	return []jobCase{
		// Accepted: one of each kind...
		{name: "daily-stats", doc: job("daily-stats", `{schedule: "50 0 0 * * *", timeZone: Europe/Berlin, dailyStats: {}}`)},
		{name: "sql", doc: job("sql", `{schedule: "0 5 * * *", timeZone: UTC, suspend: true, catchUp: {window: 48h, limit: 100},
  timeout: 10m, retries: {limit: 5, backoff: {initial: 1s, max: 1m}},
  sql: {statements: ["INSERT INTO rollup (day, job) VALUES (@slot_date, @job)"]}}`)},
		{name: "http", doc: job("http", `{schedule: "@every 1h", http: {url: "https://hooks.example.com/{{.Job}}?slot={{urlquery .Slot}}",
  method: PUT, headers: {X-Source: leasecron}, headersFrom: [{name: Authorization, env: API_TOKEN, prefix: "Bearer "}],
  body: '{"date": "{{.SlotDate}}"}', successCodes: [200, 202], timeout: 30s, followRedirects: true}}`)},
		{name: "command", doc: job("command", `{schedule: "*/5 * * * *", command: {args: [sh, -c, 'echo "$LEASECRON_SLOT"'],
  env: [{name: MODE, value: nightly}, {name: TOKEN, env: API_TOKEN}, {name: EMPTY}], gracePeriod: 5s}}`)},
		{name: "kubernetes-job", doc: kubernetesJob},
		// ...and edge cases.
		{name: "names-steps-seconds", doc: job("names-steps-seconds", `{schedule: "0 */15 9-17 ? JAN-jun mon-FRI", dailyStats: {}}`)},
		{name: "spaces-around", doc: job("spaces-around", `{schedule: "  0  5 * * *  ", dailyStats: {}}`)},
		{name: "every-fraction", doc: job("every-fraction", `{schedule: "@every 1.5h", dailyStats: {}}`)},
		{name: "default-zone", doc: job("default-zone", `{schedule: "@midnight", timeZone: "", dailyStats: {}}`)},
		{name: "zone-link", doc: job("zone-link", `{schedule: "@daily", timeZone: US/Eastern, dailyStats: {}}`)},
		{name: "upper-case-scheme", doc: job("upper-case-scheme", `{schedule: "@hourly", http: {url: "HTTPS://hooks.example.com/x"}}`)},
		{name: "scheme-from-template", doc: job("scheme-from-template", `{schedule: "@hourly", http: {url: '{{"https"}}://hooks.example.com/x'}}`)},
		{name: "empty-file-is-unset", doc: job("empty-file-is-unset", `{schedule: "@hourly", http: {url: "https://x.example", headersFrom: [{name: X-Key, file: "", env: API_TOKEN}]}}`)},

		// Refused by both.
		{name: "two-kinds", doc: job("two-kinds", `{schedule: "@daily", sql: {statements: [x]}, http: {url: "http://x"}}`),
			server: "spec: Invalid value: two kinds: set exactly one of dailyStats, sql, http, command, kubernetesJob", loader: "two kinds (sql and http)"},
		{name: "no-kind", doc: job("no-kind", `{schedule: "@daily"}`),
			server: "spec: Invalid value: no kind: set exactly one of dailyStats, sql, http, command, kubernetesJob", loader: "spec: no kind"},
		{name: "invalid-schedule", doc: job("invalid-schedule", `{schedule: "61 * * * *", dailyStats: {}}`),
			server: `spec.schedule: Invalid value: "61 * * * *": not a schedule: give 5 cron fields`, loader: "spec.schedule: cron expression \"61 * * * *\" is not valid"},
		{name: "four-fields", doc: job("four-fields", `{schedule: "* * * *", dailyStats: {}}`), server: `Invalid value: "* * * *": not a schedule`, loader: "spec.schedule"},
		{name: "words", doc: job("words", `{schedule: "every day", dailyStats: {}}`), server: `Invalid value: "every day": not a schedule`, loader: "spec.schedule"},
		{name: "descriptor-case", doc: job("descriptor-case", `{schedule: "@Daily", dailyStats: {}}`), server: `Invalid value: "@Daily": not a schedule`, loader: "spec.schedule"},
		{name: "own-zone", doc: job("own-zone", `{schedule: "TZ=UTC 0 5 * * *", dailyStats: {}}`), server: "spec.schedule: Invalid value: \"TZ=UTC 0 5 * * *\": not a schedule", loader: "sets its own time zone"},
		{name: "no-schedule", doc: job("no-schedule", `{dailyStats: {}}`), server: "spec.schedule: Required value", loader: "spec.schedule: missing"},
		{name: "empty-schedule", doc: job("empty-schedule", `{schedule: "", dailyStats: {}}`), server: `Invalid value: "": not a schedule`, loader: "spec.schedule: missing"},
		{name: "unknown-zone", doc: job("unknown-zone", `{schedule: "@daily", timeZone: Mars/Olympus, dailyStats: {}}`),
			server: `spec.timeZone: Invalid value: "Mars/Olympus": not a time zone the controller knows: use an IANA name such as UTC or Europe/Berlin`, loader: `"Mars/Olympus" is not a known time zone`},
		{name: "local-zone", doc: job("local-zone", `{schedule: "@daily", timeZone: Local, dailyStats: {}}`), server: `Invalid value: "Local": not a time zone the controller knows`, loader: `"Local" is not a known time zone`},
		{name: "zone-case", doc: job("zone-case", `{schedule: "@daily", timeZone: europe/berlin, dailyStats: {}}`), server: `Invalid value: "europe/berlin": not a time zone the controller knows`, loader: "spec.timeZone"},
		{name: "negative-timeout", doc: job("negative-timeout", `{schedule: "@daily", timeout: -1s, dailyStats: {}}`),
			server: `spec.timeout: Invalid value: "-1s": must be a positive duration such as 30s or 10m`, loader: "spec.timeout: must be a positive duration"},
		{name: "negative-retention", doc: job("negative-retention", `{schedule: "@daily", historyRetention: -1h, dailyStats: {}}`),
			server: "spec.historyRetention: Invalid value", loader: "spec.historyRetention: must be 0s (keep forever) or a positive duration"},
		{name: "zero-timeout", doc: job("zero-timeout", `{schedule: "@daily", timeout: 0s, dailyStats: {}}`), server: "spec.timeout: Invalid value", loader: "spec.timeout: must be a positive duration"},
		{name: "negative-window", doc: job("negative-window", `{schedule: "@daily", catchUp: {window: -1h}, dailyStats: {}}`),
			server: `spec.catchUp.window: Invalid value: "-1h": must be a positive duration`, loader: "spec.catchUp.window: must be a positive duration"},
		{name: "zero-catch-up-limit", doc: job("zero-catch-up-limit", `{schedule: "@daily", catchUp: {limit: 0}, dailyStats: {}}`),
			server: "spec.catchUp.limit: Invalid value: 0: spec.catchUp.limit in body should be greater than or equal to 1", loader: "spec.catchUp.limit: must be 1 or more (got 0)"},
		{name: "zero-retries", doc: job("zero-retries", `{schedule: "@daily", retries: {limit: 0}, dailyStats: {}}`),
			server: "spec.retries.limit: Invalid value: 0: spec.retries.limit in body should be greater than or equal to 1", loader: "spec.retries.limit: must be 1 or more (got 0)"},
		{name: "negative-retries", doc: job("negative-retries", `{schedule: "@daily", retries: {limit: -2}, dailyStats: {}}`),
			server: "spec.retries.limit in body should be greater than or equal to 1", loader: "spec.retries.limit: must be 1 or more (got -2)"},
		{name: "zero-backoff", doc: job("zero-backoff", `{schedule: "@daily", retries: {backoff: {initial: 0s}}, dailyStats: {}}`),
			server: `spec.retries.backoff.initial: Invalid value: "0s": must be a positive duration`, loader: "spec.retries.backoff.initial: must be a positive duration"},
		{name: "max-below-initial", doc: job("max-below-initial", `{schedule: "@daily", retries: {backoff: {initial: 1m, max: 1s}}, dailyStats: {}}`),
			server: "spec.retries.backoff: Invalid value: max is below initial", loader: "spec.retries.backoff.max: 1s is below initial 1m0s"},
		{name: "bad-duration", doc: job("bad-duration", `{schedule: "@daily", timeout: 10 minutes, dailyStats: {}}`),
			server: "spec.timeout: Invalid value", loader: "not a ScheduledJob"},
		{name: "not-http", doc: job("not-http", `{schedule: "@daily", http: {url: "ftp://files.example.com/x"}}`),
			server: `spec.http.url: Invalid value: "ftp://files.example.com/x": must be an absolute http:// or https:// URL`, loader: `scheme "ftp" is not supported`},
		{name: "relative-url", doc: job("relative-url", `{schedule: "@daily", http: {url: "/hooks/nightly"}}`), server: "spec.http.url: Invalid value", loader: "is not absolute"},
		{name: "no-url", doc: job("no-url", `{schedule: "@daily", http: {method: GET}}`), server: "spec.http.url: Required value", loader: "spec.http.url: missing"},
		{name: "bad-method", doc: job("bad-method", `{schedule: "@daily", http: {url: "http://x", method: "GET X"}}`), server: "spec.http.method in body should match", loader: "is not an HTTP method"},
		{name: "low-success-code", doc: job("low-success-code", `{schedule: "@daily", http: {url: "http://x", successCodes: [200, 99]}}`),
			server: "spec.http.successCodes[1]: Invalid value: 99: spec.http.successCodes[1] in body should be greater than or equal to 100", loader: "99 is not an HTTP status"},
		{name: "high-success-code", doc: job("high-success-code", `{schedule: "@daily", http: {url: "http://x", successCodes: [600]}}`),
			server: "spec.http.successCodes[0] in body should be less than or equal to 599", loader: "600 is not an HTTP status"},
		{name: "http-bad-timeout", doc: job("http-bad-timeout", `{schedule: "@daily", http: {url: "http://x", timeout: -5s}}`), server: "spec.http.timeout: Invalid value", loader: "spec.http.timeout: must be a positive duration"},
		{name: "header-file-and-env", doc: job("header-file-and-env", `{schedule: "@daily", http: {url: "http://x", headersFrom: [{name: X-Key, file: /etc/key, env: API_TOKEN}]}}`),
			server: "spec.http.headersFrom[0]: Invalid value: set exactly one of file", loader: "sets both file and env"},
		{name: "header-from-nothing", doc: job("header-from-nothing", `{schedule: "@daily", http: {url: "http://x", headersFrom: [{name: X-Key}]}}`),
			server: "spec.http.headersFrom[0]: Invalid value: set exactly one of file", loader: "sets neither file nor env"},
		{name: "header-name", doc: job("header-name", `{schedule: "@daily", http: {url: "http://x", headersFrom: [{name: "X Key", env: API_TOKEN}]}}`),
			server: "spec.http.headersFrom[0].name in body should match", loader: "is not a valid header name"},
		{name: "header-twice", doc: job("header-twice", `{schedule: "@daily", http: {url: "http://x", headersFrom: [{name: X-Key, env: API_TOKEN}, {name: X-Key, env: API_TOKEN}]}}`),
			server: "spec.http.headersFrom[1]: Duplicate value", loader: "header X-Key is also set by"},
		{name: "no-args", doc: job("no-args", `{schedule: "@daily", command: {args: []}}`), server: "spec.command.args: Invalid value: 0: spec.command.args in body should have at least 1 items", loader: "spec.command.args: missing"},
		{name: "empty-program", doc: job("empty-program", `{schedule: "@daily", command: {args: ["", x]}}`), server: "spec.command.args: Invalid value: the program (args[0]) is empty", loader: "the program is empty"},
		{name: "env-two-sources", doc: job("env-two-sources", `{schedule: "@daily", command: {args: [sh], env: [{name: A, value: x, env: API_TOKEN}]}}`),
			server: "spec.command.env[0]: Invalid value: set at most one of value, file", loader: "sets value and env"},
		{name: "env-name", doc: job("env-name", `{schedule: "@daily", command: {args: [sh], env: [{name: 1X, value: x}]}}`),
			server: "spec.command.env[0].name in body should match", loader: "is not a valid environment variable name"},
		{name: "env-from-name", doc: job("env-from-name", `{schedule: "@daily", command: {args: [sh], env: [{name: A, env: "NOT-A-NAME"}]}}`),
			server: "spec.command.env[0].env in body should match", loader: "is not an environment variable's name"},
		{name: "env-twice", doc: job("env-twice", `{schedule: "@daily", command: {args: [sh], env: [{name: A, value: x}, {name: A, value: y}]}}`),
			server: "spec.command.env[1]: Duplicate value", loader: "A is also set by"},
		{name: "grace-period", doc: job("grace-period", `{schedule: "@daily", command: {args: [sh], gracePeriod: 0s}}`),
			server: "spec.command.gracePeriod: Invalid value", loader: "spec.command.gracePeriod: must be a positive duration"},
		{name: "no-statements", doc: job("no-statements", `{schedule: "@daily", sql: {statements: []}}`),
			server: "spec.sql.statements in body should have at least 1 items", loader: "spec.sql.statements: empty"},
		{name: "unknown-field", doc: job("unknown-field", `{schedule: "@daily", sechdule: x, dailyStats: {}}`),
			server: `unknown field "spec.sechdule"`, loader: `unknown field "sechdule"`},
		{name: "unknown-template-field", doc: strings.Replace(strings.Replace(kubernetesJob, "kubernetes-job", "unknown-template-field", 1), "image: busybox", "imagePullPolcy: Always\n                image: busybox", 1),
			server: `unknown field "spec.kubernetesJob.template.spec.template.spec.containers[0].imagePullPolcy"`, loader: `unknown field "imagePullPolcy"`},
		{name: "long-name", doc: job(long, `{schedule: "@daily", dailyStats: {}}`),
			server: "metadata.name must be at most 63 characters", loader: "is not a DNS-1123 label: must be no more than 63 characters"},
		{name: "bad-name", doc: job("Bad_Name", `{schedule: "@daily", dailyStats: {}}`), server: `metadata.name: Invalid value: "Bad_Name"`, loader: `"Bad_Name" is not a DNS-1123 label`},
		{name: "dotted-name", doc: job("nightly.rollup", `{schedule: "@daily", dailyStats: {}}`),
			server: "metadata.name must be a DNS-1123 label", loader: `"nightly.rollup" is not a DNS-1123 label`},
		{name: "no-name", doc: "apiVersion: leasecron.io/v1alpha1\nkind: ScheduledJob\nspec: {schedule: '@daily', dailyStats: {}}\n",
			server: "resource name may not be empty", loader: "metadata.name: missing"},

		// Refused only by the controller: a regular expression cannot see
		// that a schedule never fires or that a range runs backwards, the
		// schema does not run templates, and the rest depends on where the
		// controller runs (see above) or on its flags (--job-timeout is the
		// default of spec.timeout).
		{name: "never-fires", doc: job("never-fires", `{schedule: "0 0 30 2 *", dailyStats: {}}`), loader: "never fires"},
		{name: "backwards-range", doc: job("backwards-range", `{schedule: "0 5-3 * * *", dailyStats: {}}`), loader: "beyond end of range"},
		{name: "template-error", doc: job("template-error", `{schedule: "@daily", http: {url: "https://x.example/{{.Nope}}"}}`), loader: "template fails on the slot context"},
		{name: "env-reserved", doc: job("env-reserved", `{schedule: "@daily", command: {args: [sh], env: [{name: LEASECRON_SLOT, value: x}]}}`), loader: "LEASECRON_SLOT is set by the command kind"},
		{name: "reserved-header", doc: job("reserved-header", `{schedule: "@daily", http: {url: "http://x", headers: {Idempotency-Key: x}}}`), loader: "Idempotency-Key is set by the http kind"},
		{name: "header-other-case", doc: job("header-other-case", `{schedule: "@daily", http: {url: "http://x", headers: {x-key: a}, headersFrom: [{name: X-Key, env: API_TOKEN}]}}`), loader: "also set by"},
		{name: "http-timeout-over-job", doc: job("http-timeout-over-job", `{schedule: "@daily", timeout: 1m, http: {url: "http://x", timeout: 2m}}`), loader: "longer than the attempt's timeout"},
		{name: "env-unset", doc: job("env-unset", `{schedule: "@daily", http: {url: "http://x", headersFrom: [{name: X-Key, env: NOT_SET_HERE}]}}`), loader: "NOT_SET_HERE is not set in the controller's environment"},
		{name: "no-program", doc: job("no-program", `{schedule: "@daily", command: {args: [/nonexistent/rollup]}}`), loader: "cannot run /nonexistent/rollup"},
		{name: "sql-parameter", doc: job("sql-parameter", `{schedule: "@daily", sql: {statements: ["SELECT @nope"]}}`), loader: "unknown parameter @nope"},
	}
}

// catalog is the controller's kinds, command jobs allowed. kubernetesJob
// has no kind in this tree yet: a stand-in accepts the field as it is.
func catalog() *spec.Catalog {
	return spec.NewCatalog(dailystats.Kind{}, sqljob.Kind{}, httpjob.Kind{}, commandjob.Kind{Allowed: true}, standIn("kubernetesJob"))
}

type standIn string

func (k standIn) Name() string              { return string(k) }
func (standIn) Build(spec.Job) (any, error) { return struct{}{}, nil }

// load is what the controller says of a document: the loaded job, or why
// it refuses it.
func load(doc string) (*spec.ScheduledJob, error) {
	list, err := spec.Load(strings.NewReader(doc), "job.yaml")
	if err != nil {
		return nil, err
	}
	lookup := func(name string) (string, bool) {
		if name == "API_TOKEN" {
			return "s3cret", true
		}
		return "", false
	}
	if _, err := catalog().Definitions(list, spec.Env{Location: time.UTC, LookupEnv: lookup}); err != nil {
		return nil, err
	}
	return &list[0], nil
}

// testJobs applies every case with kubectl and loads it with pkg/spec.
func testJobs(t *testing.T, c *cluster) {
	seen := map[string]bool{}
	for _, tc := range cases() {
		if seen[tc.name] {
			t.Fatalf("case %s twice", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, serverErr := c.run(tc.doc, "apply", "-n", namespace, "-f", "-")
			loaded, loaderErr := load(tc.doc)

			// The invariant: the schema never refuses what the controller runs.
			if serverErr != nil && loaderErr == nil {
				t.Errorf("the API server refuses a job the controller runs:\n%s", stderr)
			}
			switch {
			case tc.server == "" && serverErr != nil:
				t.Errorf("the API server refuses it: %v\n%s", serverErr, stderr)
			case tc.server != "" && serverErr == nil:
				t.Errorf("the API server accepts it, want it refused with %q", tc.server)
			case tc.server != "" && !strings.Contains(stderr, tc.server):
				t.Errorf("the API server refuses it with\n%s\nwhich does not say %q", stderr, tc.server)
			}
			switch {
			case tc.loader == "" && loaderErr != nil:
				t.Errorf("the loader refuses it: %v", loaderErr)
			case tc.loader != "" && loaderErr == nil:
				t.Errorf("the loader accepts it, want it refused with %q", tc.loader)
			case tc.loader != "" && !strings.Contains(loaderErr.Error(), tc.loader):
				t.Errorf("the loader refuses it with %q, which does not say %q", loaderErr, tc.loader)
			}
			if serverErr != nil || loaderErr != nil {
				return
			}
			// Accepted by both: the API server stored the spec as sent,
			// nothing pruned or added that the controller would not see.
			var stored spec.ScheduledJob
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(c.get(t, loaded.Name).Object, &stored); err != nil {
				t.Fatal(err)
			}
			if !apiequality.Semantic.DeepEqual(stored.Spec, loaded.Spec) {
				got, _ := json.Marshal(stored.Spec)
				want, _ := json.Marshal(loaded.Spec)
				t.Errorf("stored spec differs from the one sent:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// columnsJob is the job testColumns and testStatus look at.
const columnsJob = "columns"

// testColumns: kubectl get scheduledjobs prints the printer columns, from a
// status written through the status subresource.
func testColumns(t *testing.T, c *cluster) {
	c.mustRun(t, job(columnsJob, `{schedule: "0 5 * * *", dailyStats: {}}`), "apply", "-n", namespace, "-f", "-")
	now := time.Now().UTC().Truncate(time.Second)
	next := now.Add(2 * time.Hour)
	u := c.get(t, columnsJob)
	status := map[string]any{
		"observedGeneration": u.GetGeneration(),
		"lastScheduleTime":   now.Add(-3 * time.Hour).Format(time.RFC3339),
		"lastSuccessfulTime": now.Add(-3 * time.Hour).Format(time.RFC3339),
		"nextScheduleTime":   next.Format(time.RFC3339),
		"conditions": []any{map[string]any{"type": spec.ConditionReady, "status": "True", "reason": "Scheduled",
			"message": "", "lastTransitionTime": now.Format(time.RFC3339)}},
	}
	if err := unstructured.SetNestedField(u.Object, status, "status"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.dyn.Resource(jobsGVR).Namespace(namespace).UpdateStatus(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	out := c.mustRun(t, "", "get", "scheduledjobs", "-n", namespace, columnsJob)
	t.Logf("kubectl get scheduledjobs:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get printed %d lines, want a header and one row:\n%s", len(lines), out)
	}
	cells := regexp.MustCompile(`\s{2,}`)
	header, row := cells.Split(strings.TrimSpace(lines[0]), -1), cells.Split(strings.TrimSpace(lines[1]), -1)
	want := []string{"NAME", "SCHEDULE", "SUSPEND", "LAST SUCCESS", "NEXT", "AGE"}
	if !slices.Equal(header, want) {
		t.Fatalf("columns %q, want %q:\n%s", header, want, out)
	}
	if len(row) != len(want) {
		t.Fatalf("row %q has %d cells, want %d:\n%s", row, len(row), len(want), out)
	}
	for i, re := range []string{
		`^` + columnsJob + `$`,
		`^0 5 \* \* \*$`,
		`^false$`, // the schema's default
		`^3h([0-9]+m)?$`,
		`^` + regexp.QuoteMeta(next.Format(time.RFC3339)) + `$`, // a time: a date column prints <invalid> for the future
		`^[0-9]+s$`,
	} {
		if !regexp.MustCompile(re).MatchString(row[i]) {
			t.Errorf("%s is %q, want it to match %s", want[i], row[i], re)
		}
	}
}

// testStatus: status is a subresource. An update of the main resource does
// not change status and bumps generation; a status update changes status
// only, and not generation; conditions are a map keyed by type.
func testStatus(t *testing.T, c *cluster) {
	ctx := context.Background()
	res := c.dyn.Resource(jobsGVR).Namespace(namespace)
	before := c.get(t, columnsJob)
	gen := before.GetGeneration()
	status, _, _ := unstructured.NestedMap(before.Object, "status")
	if len(status) == 0 {
		t.Fatalf("%s has no status: testColumns writes it", columnsJob)
	}

	// The main resource: spec changes, status in the body is ignored.
	u := before.DeepCopy()
	_ = unstructured.SetNestedField(u.Object, true, "spec", "suspend")
	_ = unstructured.SetNestedField(u.Object, "written through the main resource", "status", "lastFailure")
	u, err := res.Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedMap(u.Object, "status"); !equalJSON(got, status) {
		t.Errorf("an update of the main resource changed status:\n got %v\nwant %v", got, status)
	}
	if s, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); !s {
		t.Errorf("spec.suspend not updated")
	}
	if u.GetGeneration() != gen+1 {
		t.Errorf("generation %d after a spec update, want %d", u.GetGeneration(), gen+1)
	}
	gen = u.GetGeneration()

	// The status subresource: status changes, spec in the body is ignored,
	// generation stays.
	_ = unstructured.SetNestedField(u.Object, "slot 2026-12-01T05:00:00Z failed: boom", "status", "lastFailure")
	_ = unstructured.SetNestedField(u.Object, gen, "status", "observedGeneration")
	_ = unstructured.SetNestedField(u.Object, false, "spec", "suspend")
	u, err = res.UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := c.get(t, columnsJob)
	if f, _, _ := unstructured.NestedString(after.Object, "status", "lastFailure"); f != "slot 2026-12-01T05:00:00Z failed: boom" {
		t.Errorf("status.lastFailure %q after a status update", f)
	}
	if s, _, _ := unstructured.NestedBool(after.Object, "spec", "suspend"); !s {
		t.Errorf("a status update changed spec.suspend")
	}
	if after.GetGeneration() != gen {
		t.Errorf("generation %d after a status update, want %d", after.GetGeneration(), gen)
	}

	// Conditions are keyed by type: two of one type are refused.
	conds, _, _ := unstructured.NestedSlice(after.Object, "status", "conditions")
	_ = unstructured.SetNestedSlice(after.Object, append(conds, conds[0]), "status", "conditions")
	_, err = res.UpdateStatus(ctx, after, metav1.UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "status.conditions[1]: Duplicate value") {
		t.Errorf("two Ready conditions: err = %v, want Duplicate value", err)
	}
}
