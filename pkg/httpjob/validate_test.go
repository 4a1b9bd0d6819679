package httpjob_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/pkg/httpjob"
	"github.com/leasecron/leasecron/pkg/spec"
)

// lookup is an environment holding only vars.
func lookup(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// Every problem with spec.http is an error that names the job and the
// field, and says what is wrong.
func TestValidationNamesJobAndField(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	twoLines := filepath.Join(dir, "two-lines")
	if err := os.WriteFile(twoLines, []byte("line-one-secret\nline-two-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := spec.Env{LookupEnv: lookup(map[string]string{"TOKEN": "t0ken"})}
	base := func() *spec.HTTP { return &spec.HTTP{URL: "https://hooks.example.com/nightly"} }
	cases := []struct {
		name   string
		edit   func(h *spec.HTTP, sj *spec.ScheduledJob)
		field  string
		msg    string // a part of the message
		hidden string // must not appear in the error
	}{
		{"url missing", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "" }, "spec.http.url", "missing", ""},
		{"url not absolute", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "/nightly" }, "spec.http.url", "not absolute", ""},
		{"url ftp", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "ftp://files.example.com/x" }, "spec.http.url", `scheme "ftp"`, ""},
		{"url without host", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "http:///x" }, "spec.http.url", "no host", ""},
		{"url not a URL", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "http://a b/" }, "spec.http.url", "not a URL", ""},
		{"url shown without its secrets", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "//user:pw-secret@/x?token=q-secret" },
			"spec.http.url", "not absolute", "secret"},
		{"url template does not parse", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "https://h.example/{{.Slot" }, "spec.http.url", "not a valid template", ""},
		{"url template names an unknown field", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "https://h.example/{{.Nope}}" }, "spec.http.url", "Nope", ""},
		{"url template renders a relative url", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.URL = "{{.Job}}/x" }, "spec.http.url", "not absolute", ""},
		{"method not a token", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Method = "PO ST" }, "spec.http.method", "not an HTTP method", ""},
		{"header name invalid", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Headers = map[string]string{"X Foo": "1"} }, "spec.http.headers[X Foo]", "not a valid header name", ""},
		{"header template names an unknown field", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Headers = map[string]string{"X-Foo": "{{.Nope}}"} },
			"spec.http.headers[X-Foo]", "Nope", ""},
		{"header template does not parse", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Headers = map[string]string{"X-Foo": "{{"} },
			"spec.http.headers[X-Foo]", "not a valid template", ""},
		{"header value has a newline", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Headers = map[string]string{"X-Foo": "a\nb"} },
			"spec.http.headers[X-Foo]", "control character", ""},
		{"Idempotency-Key set by the user", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.Headers = map[string]string{"idempotency-key": "{{.Key}}"}
		}, "spec.http.headers[idempotency-key]", "set by the http kind", ""},
		{"Idempotency-Key from a file", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.HeadersFrom = []spec.HeaderFrom{{Name: "Idempotency-Key", File: token}}
		}, "spec.http.headersFrom[0].name", "set by the http kind", ""},
		{"Content-Length set by the user", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Headers = map[string]string{"Content-Length": "3"} },
			"spec.http.headers[Content-Length]", "from the body", ""},
		{"header set twice", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.Headers = map[string]string{"Authorization": "x"}
			h.HeadersFrom = []spec.HeaderFrom{{Name: "authorization", File: token}}
		}, "spec.http.headersFrom[0].name", "also set by spec.http.headers[Authorization]", ""},
		{"body template names an unknown field", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Body = `{"at": "{{.Now}}"}` }, "spec.http.body", "Now", ""},
		{"headersFrom name missing", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.HeadersFrom = []spec.HeaderFrom{{File: token}} },
			"spec.http.headersFrom[0].name", "missing", ""},
		{"headersFrom file missing", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.HeadersFrom = []spec.HeaderFrom{{Name: "Authorization", File: filepath.Join(dir, "nope")}}
		}, "spec.http.headersFrom[0].file", "cannot read", ""},
		{"headersFrom file is a directory", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.HeadersFrom = []spec.HeaderFrom{{Name: "Authorization", File: dir}}
		}, "spec.http.headersFrom[0].file", "cannot read", ""},
		{"headersFrom file of two lines, not shown", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.HeadersFrom = []spec.HeaderFrom{{Name: "Authorization", File: twoLines}}
		}, "spec.http.headersFrom[0].file", "control character", "secret"},
		{"headersFrom env unset", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.HeadersFrom = []spec.HeaderFrom{{Name: "X-Token", Env: "UNSET"}}
		},
			"spec.http.headersFrom[0].env", "UNSET is not set", ""},
		{"headersFrom both file and env", func(h *spec.HTTP, _ *spec.ScheduledJob) {
			h.HeadersFrom = []spec.HeaderFrom{{Name: "X-Token", Env: "TOKEN", File: token}}
		}, "spec.http.headersFrom[0]", "both file and env", ""},
		{"headersFrom neither file nor env", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.HeadersFrom = []spec.HeaderFrom{{Name: "X-Token"}} },
			"spec.http.headersFrom[0]", "neither file nor env", ""},
		{"successCode 99", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.SuccessCodes = []int32{99} }, "spec.http.successCodes[0]", "100 to 599", ""},
		{"successCode 600", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.SuccessCodes = []int32{200, 600} }, "spec.http.successCodes[1]", "100 to 599", ""},
		{"timeout zero", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Timeout = dur(0) }, "spec.http.timeout", "positive", ""},
		{"timeout negative", func(h *spec.HTTP, _ *spec.ScheduledJob) { h.Timeout = dur(-time.Second) }, "spec.http.timeout", "positive", ""},
		{"timeout above the attempt's", func(h *spec.HTTP, sj *spec.ScheduledJob) {
			sj.Spec.Timeout = dur(time.Minute)
			h.Timeout = dur(2 * time.Minute)
		}, "spec.http.timeout", "longer than the attempt's timeout", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := base()
			sj := newJob(h)
			c.edit(h, sj)
			_, err := spec.NewCatalog(httpjob.Kind{}).Definition(sj, env)
			if err == nil {
				t.Fatal("the job was accepted")
			}
			fes := spec.FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("got %d field errors, want 1: %v", len(fes), err)
			}
			fe := fes[0]
			if fe.Job != jobName || fe.Field != c.field || !strings.Contains(fe.Msg, c.msg) {
				t.Fatalf("error = %q (job %q, field %q), want job %q, field %q, a message with %q", err, fe.Job, fe.Field, jobName, c.field, c.msg)
			}
			if !strings.HasPrefix(err.Error(), "job "+jobName+": "+c.field+": ") {
				t.Fatalf("error = %q, want it to start with the job and the field", err)
			}
			if c.hidden != "" && strings.Contains(err.Error(), c.hidden) {
				t.Fatalf("error = %q shows %q", err, c.hidden)
			}
		})
	}
}

// A spec with several problems reports every one.
func TestValidationReportsEveryProblem(t *testing.T) {
	sj := newJob(&spec.HTTP{
		URL:          "ftp://x/",
		Method:       "a b",
		HeadersFrom:  []spec.HeaderFrom{{Name: "X-A", Env: "UNSET"}, {Name: "X-B"}},
		SuccessCodes: []int32{0},
	})
	_, err := spec.NewCatalog(httpjob.Kind{}).Definition(sj, spec.Env{LookupEnv: lookup(nil)})
	var got []string
	for _, fe := range spec.FieldErrors(err) {
		got = append(got, fe.Field)
	}
	want := []string{"spec.http.url", "spec.http.method", "spec.http.headersFrom[0].env", "spec.http.headersFrom[1]", "spec.http.successCodes[0]"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("fields = %q, want %q (error: %v)", got, want, err)
	}
}

// A valid spec builds a jobs.Job of kind http; any token is a method.
func TestValidSpecBuilds(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sj := newJob(&spec.HTTP{
		URL:          "https://hooks.example.com/{{.Job}}?date={{.SlotDate}}&prev={{urlquery .PrevSlot}}",
		Method:       "PURGE",
		Headers:      map[string]string{"X-Slot": "{{.Slot}}", "X-Key": "{{.Key}}"},
		HeadersFrom:  []spec.HeaderFrom{{Name: "Authorization", File: token, Prefix: "Bearer "}, {Name: "X-Token", Env: "TOKEN"}},
		Body:         `{"date": "{{.SlotDate}}"}`,
		SuccessCodes: []int32{100, 599},
		Timeout:      dur(time.Second),
	})
	def := definition(t, sj, spec.Env{LookupEnv: lookup(map[string]string{"TOKEN": ""})})
	if def.Kind != "http" {
		t.Fatalf("Kind = %q, want http", def.Kind)
	}
	if (httpjob.Kind{}).Name() != "http" {
		t.Fatalf("Name() = %q", (httpjob.Kind{}).Name())
	}
	if _, ok := def.Work.(*httpjob.Job); !ok {
		t.Fatalf("Work is %T, want *httpjob.Job", def.Work)
	}
}
