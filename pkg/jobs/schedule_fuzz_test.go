package jobs

import (
	"testing"
	"time"
)

// FuzzParseSchedule: any expression either parses or is rejected with an
// error, never a panic; a schedule that parses yields slots strictly after
// the time asked about, and Prev finds the slot Next returned. Across DST
// (zones east and west of UTC, both hemispheres): every slot is a wall time
// the expression matches, or the instant the clock jumped over one, and a
// schedule that names its hours never fires the same wall time twice in a
// row (a repeated time runs once).
func FuzzParseSchedule(f *testing.F) {
	for _, seed := range []string{
		"50 0 0 * * *", "* * * * * *", "*/5 * * * *", "0 30 2 * * *", "@daily", "@every 90s",
		"@every 0s", "0 0 0 30 2 *", "TZ=UTC @daily", "61 * * * * *", "1-5/0 * * * *", "", "@yearly",
		"30 * * * *", "0 30 1 * * *", "* 2 * * *",
	} {
		f.Add(seed, int64(1764028800))
	}
	// Around the 2026 transitions of the zones below.
	for _, at := range []int64{1774746000, 1792890000, 1775318400, 1791043200, 1772953200, 1793512800} {
		f.Add("0 30 2 * * *", at-2*3600)
		f.Add("30 * * * *", at-2*3600)
	}
	var locs []*time.Location
	for _, name := range []string{"UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney"} {
		loc, err := time.LoadLocation(name)
		if err != nil {
			f.Fatal(err)
		}
		locs = append(locs, loc)
	}
	f.Fuzz(func(t *testing.T, expr string, unix int64) {
		at := time.Unix(unix%(1<<33), 0) // years 1700 to 2242
		for _, loc := range locs {
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
			if prev := s.Prev(next); !prev.Equal(next) {
				t.Fatalf("%q in %s: Prev(Next(%s) = %s) = %s", expr, loc, at, next, prev)
			}
			if s.spec == nil {
				continue
			}
			after := s.Next(next)
			for _, slot := range []time.Time{next, after} {
				if slot.IsZero() {
					continue
				}
				w := wall(slot.In(loc))
				start, _ := slot.In(loc).ZoneBounds()
				if !s.spec.Next(w.Add(-time.Nanosecond)).Equal(w) && !slot.Equal(start) {
					t.Fatalf("%q in %s: slot %s is neither a matching wall time nor a jump", expr, loc, slot.In(loc))
				}
			}
			if !after.IsZero() && !s.everyHour && wall(after.In(loc)).Equal(wall(next.In(loc))) {
				t.Fatalf("%q in %s: wall time %s fired twice (%s and %s)", expr, loc, wall(next.In(loc)), next, after)
			}
		}
	})
}
