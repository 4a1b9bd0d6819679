package jobs

import (
	"testing"
	"time"
)

// FuzzParseSchedule: any expression either parses or is rejected with an
// error, never a panic; a schedule that parses yields slots strictly after
// the time asked about, and Prev finds the slot Next returned.
func FuzzParseSchedule(f *testing.F) {
	for _, seed := range []string{
		"50 0 0 * * *", "* * * * * *", "*/5 * * * *", "0 30 2 * * *", "@daily", "@every 90s",
		"@every 0s", "0 0 0 30 2 *", "TZ=UTC @daily", "61 * * * * *", "1-5/0 * * * *", "", "@yearly",
	} {
		f.Add(seed, int64(1764028800))
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, expr string, unix int64) {
		at := time.Unix(unix%(1<<33), 0) // years 1700 to 2242
		for _, loc := range []*time.Location{time.UTC, ny} {
			s, err := ParseSchedule(expr, loc)
			if err != nil {
				if s != nil || err.Error() == "" {
					t.Fatalf("ParseSchedule(%q) = %v, %v", expr, s, err)
				}
				return
			}
			next := s.Next(at)
			if next.IsZero() {
				continue
			}
			if !next.After(at) {
				t.Fatalf("%q in %s: Next(%s) = %s, not after", expr, loc, at, next)
			}
			if loc == time.UTC {
				if prev := s.Prev(next); !prev.Equal(next) {
					t.Fatalf("%q: Prev(Next(%s) = %s) = %s", expr, at, next, prev)
				}
			}
		}
	})
}
