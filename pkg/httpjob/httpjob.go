// Package httpjob is the http job kind: for each slot it sends one HTTP
// request to a receiver.
//
// # Promise
//
// At-least-once delivery, recorded once. The request is sent after the slot
// is claimed in the ledger and before its success is recorded, so a slot is
// delivered at least once: an attempt that fails (an error, a timeout, a
// status outside successCodes) is sent again, and so is a delivery whose
// success could not be recorded because another leader took over meanwhile
// (the engine records completion only under a valid leadership term). Every
// delivery of a slot, on every attempt, leader, catch-up and backfill,
// carries the same header
//
//	Idempotency-Key: <job>@<slot RFC 3339 UTC>
//
// so a receiver that keys on it sees each slot's effect once. What breaks
// the promise: a receiver that ignores Idempotency-Key may see a slot twice
// (after a retry, or after a leader change while the request was in
// flight); and a success the receiver gave but that never arrived (a lost
// response, a timeout) is a failure here and is delivered again.
//
// # Templates
//
// The url, the header values and the body are Go text/templates over the
// slot context, never the current time:
//
//	{{.Slot}}      the slot's time, RFC 3339 UTC, such as 2026-03-10T04:00:00Z
//	{{.SlotDate}}  its calendar date in the job's zone, YYYY-MM-DD
//	{{.PrevSlot}}  the schedule's slot before it, RFC 3339 UTC ("" if none)
//	{{.Job}}       the job's name
//	{{.Key}}       the slot's idempotency key
//
// Templates are not escaped: use {{urlquery .Slot}} in a query string.
//
// # Secrets
//
// Header values from headersFrom are read from a file (a mounted Secret) or
// an environment variable at every attempt, so a rotated Secret is picked
// up. No header value is ever logged. A failure's text, which the engine
// logs and records in the ledger, shows the URL without its userinfo and
// query, and every header value (of headers and headersFrom) that appears in
// the receiver's answer or in a transport error is replaced by [redacted].
// When redirects are followed, headersFrom headers are not sent to another
// host.
package httpjob

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

// KindName is the kind's name: its field in a job spec.
const KindName = "http"

// IdempotencyKey is the header that carries the slot's key on every
// delivery. The kind sets it; a spec may not.
const IdempotencyKey = "Idempotency-Key"

// maxRedirects is how many redirects a request follows at most, as
// net/http's default policy.
const maxRedirects = 10

// contextFields lists the slot context's template fields, for messages.
const contextFields = ".Slot, .SlotDate, .PrevSlot, .Job and .Key"

// Kind is the http kind. It implements spec.Kind.
type Kind struct{}

// Name implements spec.Kind.
func (Kind) Name() string { return KindName }

// Build implements spec.Kind: it checks spec.http and returns a *Job.
func (Kind) Build(j spec.Job) (any, error) {
	w, err := build(j)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Job is the http work: one request per attempt. It implements jobs.Job.
type Job struct {
	job       string
	method    string
	url       *template.Template
	headers   []header     // sorted by name
	from      []headerFrom // in spec order
	body      *template.Template
	success   [600]bool
	timeout   time.Duration
	follow    bool
	lookupEnv func(string) (string, bool)
	client    *http.Client
}

type header struct {
	name  string // canonical
	value *template.Template
}

type headerFrom struct {
	name   string // canonical
	file   string
	env    string
	prefix string
}

// slotData is what the templates see.
type slotData struct {
	Slot     string
	SlotDate string
	PrevSlot string
	Job      string
	Key      string
}

func dataOf(s jobs.Slot) slotData {
	d := slotData{
		Slot:     s.Time.UTC().Format(time.RFC3339),
		SlotDate: s.Date.String(),
		Job:      s.Job,
		Key:      s.Key,
	}
	if !s.Prev.IsZero() {
		d.PrevSlot = s.Prev.UTC().Format(time.RFC3339)
	}
	return d
}

// sampleData is the context templates are tried with at Build: an unknown
// field fails there, not at the first slot.
func sampleData(j spec.Job) slotData {
	loc := j.Location
	if loc == nil {
		loc = time.UTC
	}
	t := time.Date(2026, time.March, 10, 4, 0, 0, 0, time.UTC)
	return dataOf(jobs.Slot{
		Job: j.Name, Time: t, Prev: t.Add(-24 * time.Hour),
		Date: model.DateOf(t.In(loc)), Key: jobs.SlotKey(j.Name, t),
	})
}

func build(j spec.Job) (*Job, error) {
	h := j.Spec.HTTP
	if h == nil {
		return nil, j.Errorf("spec.http", "missing: an http job needs at least a url")
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, j.Errorf(field, format, args...))
	}
	sample := sampleData(j)
	w := &Job{job: j.Name, lookupEnv: j.Env.LookupEnv, follow: h.FollowRedirects}
	if w.lookupEnv == nil {
		w.lookupEnv = os.LookupEnv
	}

	// url
	if strings.TrimSpace(h.URL) == "" {
		bad("spec.http.url", "missing: give the receiver's absolute URL, such as https://hooks.example.com/nightly")
	} else if t, out, msg := parseTemplate("spec.http.url", h.URL, sample); msg != "" {
		bad("spec.http.url", "%s", msg)
	} else if _, err := checkURL(out); err != nil {
		bad("spec.http.url", "%v", err)
	} else {
		w.url = t
	}

	// method
	w.method = h.Method
	if w.method == "" {
		w.method = http.MethodPost
	} else if !isToken(w.method) {
		bad("spec.http.method", "%q is not an HTTP method: use a token such as POST, PUT or GET", h.Method)
	}

	// headers
	seen := map[string]string{} // canonical name -> field
	names := make([]string, 0, len(h.Headers))
	for n := range h.Headers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		field := fmt.Sprintf("spec.http.headers[%s]", n)
		canon, ok := checkHeaderName(n, field, seen, bad)
		if !ok {
			continue
		}
		t, out, msg := parseTemplate(field, h.Headers[n], sample)
		if msg != "" {
			bad(field, "%s", msg)
			continue
		}
		if !validValue(out) {
			bad(field, "the value holds a control character (such as a newline): a header value is one line of text")
			continue
		}
		w.headers = append(w.headers, header{name: canon, value: t})
	}

	// headersFrom
	for i, f := range h.HeadersFrom {
		field := fmt.Sprintf("spec.http.headersFrom[%d]", i)
		var name string
		nameOK := false
		if f.Name == "" {
			bad(field+".name", "missing: give the header's name, such as Authorization")
		} else {
			name, nameOK = checkHeaderName(f.Name, field+".name", seen, bad)
		}
		if !validValue(f.Prefix) {
			bad(field+".prefix", "holds a control character (such as a newline): a header value is one line of text")
			nameOK = false
		}
		switch {
		case f.File != "" && f.Env != "":
			bad(field, "sets both file and env: set exactly one")
			continue
		case f.File == "" && f.Env == "":
			bad(field, "sets neither file nor env: set file (a mounted Secret's path) or env (an environment variable)")
			continue
		case f.File != "":
			if _, err := readFile(f.File); err != nil {
				bad(field+".file", "%v: mount the Secret at that path, or fix the path", err)
				continue
			}
		default:
			v, ok := w.lookupEnv(f.Env)
			if !ok {
				bad(field+".env", "environment variable %s is not set in the controller's environment: set it, or read the value from a file", f.Env)
				continue
			}
			if !validValue(v) {
				bad(field+".env", "environment variable %s holds a control character (such as a newline): a header value is one line of text", f.Env)
				continue
			}
		}
		if nameOK {
			w.from = append(w.from, headerFrom{name: name, file: f.File, env: f.Env, prefix: f.Prefix})
		}
	}

	// body
	if h.Body != "" {
		if t, _, msg := parseTemplate("spec.http.body", h.Body, sample); msg != "" {
			bad("spec.http.body", "%s", msg)
		} else {
			w.body = t
		}
	}

	// successCodes
	if len(h.SuccessCodes) == 0 {
		for c := 200; c < 300; c++ {
			w.success[c] = true
		}
	}
	for i, c := range h.SuccessCodes {
		if c < 100 || c > 599 {
			bad(fmt.Sprintf("spec.http.successCodes[%d]", i), "%d is not an HTTP status: use codes from 100 to 599, such as 200 or 202", c)
			continue
		}
		w.success[c] = true
	}

	// timeout
	w.timeout = j.Policy.Timeout
	if h.Timeout != nil {
		switch d := h.Timeout.Duration; {
		case d <= 0:
			bad("spec.http.timeout", "must be a positive duration such as 30s or 2m (got %s)", d)
		case j.Policy.Timeout > 0 && d > j.Policy.Timeout:
			bad("spec.http.timeout", "%s is longer than the attempt's timeout %s, which would end the request first: lower it, or raise spec.timeout", d, j.Policy.Timeout)
		default:
			w.timeout = d
		}
	}
	if w.timeout <= 0 {
		w.timeout = jobs.DefaultPolicy().Timeout
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	w.client = newClient(w)
	return w, nil
}

// parseTemplate parses text as the template named field and executes it
// once against sample. It returns a message saying what is wrong, or the
// template and its output.
func parseTemplate(field, text string, sample slotData) (*template.Template, string, string) {
	t, err := template.New(field).Parse(text)
	if err != nil {
		return nil, "", fmt.Sprintf("not a valid template: %s", templateError(err, field, sample))
	}
	var b bytes.Buffer
	if err := t.Execute(&b, sample); err != nil {
		return nil, "", fmt.Sprintf("template fails on the slot context, whose fields are %s: %s", contextFields, templateError(err, field, sample))
	}
	return t, b.String(), ""
}

// templateError is a template's error without what the message names
// already: the template's name (the field) and the context's Go type.
func templateError(err error, field string, sample slotData) string {
	msg := strings.TrimPrefix(err.Error(), "template: "+field+":")
	msg = strings.ReplaceAll(msg, fmt.Sprintf(" in type %T", sample), "")
	return "line " + strings.TrimSpace(msg)
}

// checkHeaderName checks a header name given at field, and that no other
// header of the spec has it. It returns the canonical name.
func checkHeaderName(n, field string, seen map[string]string, bad func(field, format string, args ...any)) (string, bool) {
	if !isToken(n) {
		bad(field, "%q is not a valid header name: use letters, digits and - (such as X-Api-Key)", n)
		return "", false
	}
	canon := http.CanonicalHeaderKey(n)
	switch canon {
	case IdempotencyKey:
		bad(field, "%s is set by the http kind on every delivery (to the slot's key): remove it", IdempotencyKey)
		return "", false
	case "Content-Length", "Transfer-Encoding":
		bad(field, "%s is set by the HTTP client from the body: remove it", canon)
		return "", false
	}
	if other, dup := seen[canon]; dup {
		bad(field, "header %s is also set by %s: set each header once", canon, other)
		return "", false
	}
	seen[canon] = field
	return canon, true
}

// checkURL parses a rendered url and checks that it is absolute http(s)
// with a host. Its errors never show the userinfo or query.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("not a URL (%v): give an absolute URL such as https://hooks.example.com/nightly", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		if u.Scheme == "" {
			return nil, fmt.Errorf("%q is not absolute: give scheme and host, such as https://hooks.example.com/nightly", shown(u))
		}
		return nil, fmt.Errorf("scheme %q is not supported: use http or https", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q has no host: give one, such as https://hooks.example.com/nightly", shown(u))
	}
	return u, nil
}

// shown is u as failures show it: without userinfo, query and fragment,
// where secrets tend to live.
func shown(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = nil, "", false, "", ""
	return c.String()
}

// isToken reports whether s is an RFC 7230 token (a method or header name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue reports whether s can be a header value: no control character
// but horizontal tab.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// readFile reads a headersFrom file: its content without trailing newlines.
// Its errors name the file, never the content.
func readFile(path string) (string, error) {
	v, err := spec.ReadValueFile(path)
	if err != nil {
		return "", err
	}
	if !validValue(v) {
		return "", fmt.Errorf("%s holds a control character (such as a newline) inside its content: a header value is one line of text", path)
	}
	return v, nil
}
