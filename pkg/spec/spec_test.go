package spec

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/pkg/jobs"
)

// noopKind stands for a real kind: it accepts its field as it is.
type noopKind struct{ name string }

func (k noopKind) Name() string { return k.name }
func (noopKind) Build(Job) (any, error) {
	return jobs.Func(func(context.Context, jobs.Slot) error { return nil }), nil
}

func catalog() *Catalog {
	return NewCatalog(noopKind{"dailyStats"}, noopKind{"sql"}, noopKind{"http"})
}

const header = "apiVersion: leasecron.io/v1alpha1\nkind: ScheduledJob\n"

func load(t *testing.T, text string) ([]jobs.Definition, error) {
	t.Helper()
	list, err := Load(strings.NewReader(text), "jobs.yaml")
	if err != nil {
		return nil, err
	}
	return catalog().Definitions(list, Env{Location: time.UTC})
}

func TestLoadSeveralDocumentsWithDefaults(t *testing.T) {
	defs, err := load(t, `# comment only document
---
`+header+`metadata: {name: a}
spec:
  schedule: "0 5 * * *"
  timeZone: Europe/Berlin
  sql: {statements: ["SELECT 1"]}
---
---
`+header+`metadata: {name: b}
spec:
  schedule: "@every 1h"
  suspend: true
  catchUp: {window: 1h, limit: 3}
  timeout: 30s
  retries: {limit: 2, backoff: {initial: 2s, max: 8s}}
  historyRetention: 0s
  http: {url: "http://x"}
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) != 2 {
		t.Fatalf("%d definitions, want 2", len(defs))
	}
	a, b := defs[0], defs[1]
	if a.Name != "a" || a.Kind != "sql" || a.Schedule.Location().String() != "Europe/Berlin" || a.Policy != jobs.DefaultPolicy() {
		t.Errorf("a = %+v (policy %+v), want sql in Europe/Berlin with the default policy", a, a.Policy)
	}
	want := jobs.Policy{Suspend: true, CatchUpWindow: time.Hour, CatchUpLimit: 3, Timeout: 30 * time.Second, Attempts: 2, RetryInitial: 2 * time.Second, RetryMax: 8 * time.Second,
		HistoryRetention: jobs.KeepHistory}
	if b.Kind != "http" || b.Policy != want {
		t.Errorf("b policy = %+v, want %+v", b.Policy, want)
	}
	if a.Revision == "" || a.Revision == b.Revision {
		t.Errorf("revisions %q and %q: want distinct, non-empty", a.Revision, b.Revision)
	}
}

func TestEnvDefaultsFillUnsetFields(t *testing.T) {
	list, err := Load(strings.NewReader(header+"metadata: {name: a}\nspec: {schedule: '@daily', sql: {statements: [x]}}\n"), "f")
	if err != nil {
		t.Fatal(err)
	}
	defs, err := catalog().Definitions(list, Env{Location: time.UTC, Defaults: jobs.Policy{CatchUpWindow: time.Hour, CatchUpLimit: -1, Timeout: time.Minute, HistoryRetention: 2 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if p := defs[0].Policy; p.CatchUpWindow != time.Hour || p.CatchUpLimit != -1 || p.Timeout != time.Minute || p.HistoryRetention != 2*time.Hour {
		t.Errorf("policy = %+v, want the controller's defaults", p)
	}
}

// Every bad input gets one error that names the job, the field and the fix.
func TestBadInput(t *testing.T) {
	job := func(name, spec string) string { return header + "metadata: {name: " + name + "}\nspec: " + spec + "\n" }
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"not YAML", "{{{", []string{"jobs.yaml: document 1: not a ScheduledJob"}},
		{"wrong apiVersion", "apiVersion: v1\nkind: ScheduledJob\nmetadata: {name: a}\n", []string{`apiVersion "v1": want apiVersion: leasecron.io/v1alpha1`}},
		{"wrong kind", "apiVersion: leasecron.io/v1alpha1\nkind: CronJob\nmetadata: {name: a}\n", []string{`kind "CronJob": want kind: ScheduledJob`}},
		{"unknown field", job("a", "{schedule: '@daily', sql: {statements: [x]}, sechdule: x}"), []string{"document 1: job a: not a ScheduledJob: unknown field \"sechdule\""}},
		{"no kind", job("a", "{schedule: '@daily'}"), []string{"job a: spec: no kind: set exactly one of dailyStats, http, sql"}},
		{"two kinds", job("a", "{schedule: '@daily', sql: {statements: [x]}, http: {url: 'http://x'}}"), []string{"job a: spec: two kinds (sql and http): set exactly one"}},
		{"invalid name", job("Bad_Name", "{schedule: '@daily', dailyStats: {}}"), []string{`job Bad_Name: metadata.name: "Bad_Name" is not a DNS-1123 label`}},
		{"no name", header + "spec: {schedule: '@daily', dailyStats: {}}\n", []string{"metadata.name: missing"}},
		{"duplicate name", job("a", "{schedule: '@daily', dailyStats: {}}") + "---\n" + job("a", "{schedule: '@hourly', dailyStats: {}}"), []string{"job a: metadata.name: defined twice"}},
		{"invalid schedule", job("a", "{schedule: '61 * * * *', dailyStats: {}}"), []string{"job a: spec.schedule:"}},
		{"no schedule", job("a", "{dailyStats: {}}"), []string{"job a: spec.schedule: missing"}},
		{"invalid zone", job("a", "{schedule: '@daily', timeZone: Mars/Olympus, dailyStats: {}}"), []string{`job a: spec.timeZone: "Mars/Olympus" is not a known time zone`}},
		{"zero timeout", job("a", "{schedule: '@daily', timeout: 0s, dailyStats: {}}"), []string{"job a: spec.timeout: must be a positive duration"}},
		{"negative window", job("a", "{schedule: '@daily', catchUp: {window: -1h}, dailyStats: {}}"), []string{"job a: spec.catchUp.window: must be a positive duration"}},
		{"zero catch-up limit", job("a", "{schedule: '@daily', catchUp: {limit: 0}, dailyStats: {}}"), []string{"job a: spec.catchUp.limit: must be 1 or more (got 0)"}},
		{"negative retries", job("a", "{schedule: '@daily', retries: {limit: -2}, dailyStats: {}}"), []string{"job a: spec.retries.limit: must be 1 or more (got -2)"}},
		{"zero backoff", job("a", "{schedule: '@daily', retries: {backoff: {initial: 0s}}, dailyStats: {}}"), []string{"job a: spec.retries.backoff.initial: must be a positive duration"}},
		{"max below initial", job("a", "{schedule: '@daily', retries: {backoff: {initial: 1m, max: 1s}}, dailyStats: {}}"), []string{"job a: spec.retries.backoff.max: 1s is below initial 1m0s"}},
		{"negative retention", job("a", "{schedule: '@daily', historyRetention: -1h, dailyStats: {}}"), []string{"job a: spec.historyRetention: must be 0s (keep forever) or a positive duration such as 168h (got -1h0m0s)"}},
		{"bad duration", job("a", "{schedule: '@daily', timeout: 10 minutes, dailyStats: {}}"), []string{"document 1: not a ScheduledJob"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.text)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, e := range unjoin(err) {
				if strings.Contains(e.Error(), "\n") {
					t.Errorf("problem spans lines: %q", e)
				}
			}
		})
	}
}

// Several problems in one file are all reported, one error each.
func TestEveryProblemReported(t *testing.T) {
	_, err := load(t, header+"metadata: {name: a}\nspec: {schedule: nope, timeout: -1s}\n")
	if n := len(unjoin(err)); n != 3 {
		t.Fatalf("%d problems reported (%v), want 3: schedule, timeout, no kind", n, err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Job != "a" {
		t.Fatalf("error %v is not a FieldError of job a", err)
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}
