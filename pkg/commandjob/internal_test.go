package commandjob

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

// gracePeriod defaults to 10s; the attempt's timeout is kept for messages.
func TestBuildDefaults(t *testing.T) {
	sj := &spec.ScheduledJob{ObjectMeta: metav1.ObjectMeta{Name: "cmd"}, Spec: spec.JobSpec{Command: &spec.Command{Args: []string{"sh"}}}}
	j := spec.Job{ScheduledJob: sj, Policy: jobs.Policy{Timeout: time.Minute}}
	w, err := build(j)
	if err != nil {
		t.Fatal(err)
	}
	if w.grace != 10*time.Second || w.timeout != time.Minute || w.log == nil || w.lookupEnv == nil {
		t.Fatalf("grace %s, timeout %s, log %v, lookupEnv set %v; want 10s, 1m0s and defaults", w.grace, w.timeout, w.log, w.lookupEnv != nil)
	}
	sj.Spec.Command.GracePeriod = &metav1.Duration{Duration: time.Second}
	if w, err = build(j); err != nil || w.grace != time.Second {
		t.Fatalf("gracePeriod 1s: %v, %v", w, err)
	}
}

func TestRedact(t *testing.T) {
	cases := []struct {
		name    string
		s       string
		secrets []string
		want    string
	}{
		{"none", "plain", nil, "plain"},
		{"inside", "a SECRET b SECRET", []string{"SECRET"}, "a [redacted] b [redacted]"},
		{"longest first", "Bearer tok and tok", []string{"Bearer tok", "tok"}, "[redacted] and [redacted]"},
		{"overlapping", "xabcabcx", []string{"abca", "cabc"}, "x[redacted]x"},
		{"adjacent", "abab", []string{"ab"}, "[redacted][redacted]"},
		{"secret inside the mark", "red", []string{"red"}, "[redacted]"},
	}
	for _, c := range cases {
		if got := redact(c.s, secretsOf(c.secrets)); got != c.want {
			t.Errorf("%s: redact(%q) = %q, want %q", c.name, c.s, got, c.want)
		}
	}
	got := secretsOf([]string{"", "one\r\ntwo-longer", "one"})
	if strings.Join(got, ",") != "one\r\ntwo-longer,two-longer,one" {
		t.Fatalf("secretsOf = %q, want the whole value, then its lines, longest first, each once", got)
	}
}

func TestTail(t *testing.T) {
	o := &output{}
	o.end = []byte("first\n\tsecond\x1b[0m\n\xffbad\n")
	if got := o.tail(100); got != "first |  second [0m | \uFFFDbad" {
		t.Fatalf("tail = %q", got)
	}
	if got := o.tail(3); got != "" {
		t.Fatalf("tail(3) = %q, want nothing (no room)", got)
	}
	o.end = []byte(strings.Repeat("ü", 1000) + "\n")
	for budget := 10; budget < 20; budget++ {
		got := o.tail(budget)
		if len(got) > budget || !utf8.ValidString(got) || !strings.HasPrefix(got, "…ü") {
			t.Fatalf("tail(%d) = %q: %d bytes, valid %v", budget, got, len(got), utf8.ValidString(got))
		}
	}
	if got := o.tail(5000); len(got) > tailMax {
		t.Fatalf("tail(5000) is %d bytes, want at most %d", len(got), tailMax)
	}
}
