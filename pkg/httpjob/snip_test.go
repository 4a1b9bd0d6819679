package httpjob

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSnip(t *testing.T) {
	const secret = "SECRET-VALUE"
	cases := []struct {
		name    string
		body    string
		limit   int
		secrets []string
		want    string
	}{
		{"short", "  oops \n", 100, nil, "oops"},
		{"cut", "abcdef", 3, nil, "abc"},
		{"secret inside", "a SECRET-VALUE b", 100, []string{secret}, "a [redacted] b"},
		{"secret across the cut", "0123" + secret + "tail", 6, []string{secret}, "0123[r"},
		{"secret starting at the cut is cut off", "012345" + secret, 6, []string{secret}, "012345"},
		{"longest first", "Bearer tok and tok", 100, []string{"Bearer tok", "tok"}, "[redacted] and [redacted]"},
		{"overlapping", "abcabc", 100, []string{"abca", "cabc"}, "[redacted]"},
		{"control characters", "a\x00b\r\nc", 100, nil, "a b  c"},
		{"invalid UTF-8", "a\xffb", 100, nil, "a\uFFFDb"},
		{"no split character", "aä", 2, nil, "a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := snip([]byte(c.body), c.limit, dedupe(c.secrets))
			if got != c.want {
				t.Fatalf("snip(%q, %d) = %q, want %q", c.body, c.limit, got, c.want)
			}
			if len(got) > c.limit || !utf8.ValidString(got) {
				t.Fatalf("snip = %q: %d bytes (limit %d), valid UTF-8 %v", got, len(got), c.limit, utf8.ValidString(got))
			}
		})
	}
}

// A secret never shows in part, wherever it sits around the cut.
func TestSnipNeverShowsPartOfASecret(t *testing.T) {
	const secret = "s3cr3t-abcdefghij"
	for pos := 0; pos < 40; pos++ {
		body := strings.Repeat("x", pos) + secret + strings.Repeat("y", 40)
		b := []byte(body)[:min(len(body), 20+len(secret)+utf8.UTFMax)] // as Run reads it
		got := snip(b, 20, []string{secret})
		for n := 4; n <= len(secret); n++ {
			if strings.Contains(got, secret[:n]) {
				t.Fatalf("secret at %d: snip = %q shows %q", pos, got, secret[:n])
			}
		}
	}
}
