package jobs

import (
	"strings"
	"testing"
	"time"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustSchedule(t *testing.T, expr string, loc *time.Location) *Schedule {
	t.Helper()
	s, err := ParseSchedule(expr, loc)
	if err != nil {
		t.Fatalf("ParseSchedule(%q): %v", expr, err)
	}
	return s
}

// slotsBetween lists the slots in (from, to].
func slotsBetween(s *Schedule, from, to time.Time) []time.Time {
	var out []time.Time
	for t := s.Next(from); !t.IsZero() && !t.After(to); t = s.Next(t) {
		out = append(out, t)
	}
	return out
}

func TestParseScheduleRejects(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"", "empty"},
		{"not a cron", "not valid"},
		{"61 * * * * *", "not valid"},
		{"* * * *", "not valid"},
		{"TZ=UTC 0 0 * * *", "--timezone"},
		{"0 0 0 30 2 *", "never fires"},
		{"@sometimes", "not valid"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			_, err := ParseSchedule(tc.expr, time.UTC)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseSchedule(%q) = %v, want error containing %q", tc.expr, err, tc.want)
			}
		})
	}
}

func TestScheduleForms(t *testing.T) {
	base := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		expr string
		want time.Time
	}{
		{"50 0 0 * * *", time.Date(2026, 11, 25, 0, 0, 50, 0, time.UTC)},
		{"*/15 * * * *", base.Add(15 * time.Minute)},
		{"* * * * * *", base.Add(time.Second)},
		{"@daily", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)},
		{"@every 1h", base.Add(time.Hour)},
	} {
		s := mustSchedule(t, tc.expr, time.UTC)
		if got := s.Next(base); !got.Equal(tc.want) {
			t.Errorf("%q.Next(%s) = %s, want %s", tc.expr, base, got, tc.want)
		}
		if got := s.Prev(tc.want); !got.Equal(tc.want) {
			t.Errorf("%q.Prev(%s) = %s, want the slot itself", tc.expr, tc.want, got)
		}
		if got := s.Prev(tc.want.Add(-time.Nanosecond)); !got.Before(tc.want) {
			t.Errorf("%q.Prev(just before %s) = %s, want an earlier slot", tc.expr, tc.want, got)
		}
	}
}

// Spring forward in New York: 2026-03-08 02:00 EST jumps to 03:00 EDT.
func TestDSTSpringForwardSlotNotLost(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	s := mustSchedule(t, "0 30 2 * * *", ny)
	day := time.Date(2026, 3, 7, 12, 0, 0, 0, ny)
	got := slotsBetween(s, day, day.Add(72*time.Hour))
	if len(got) != 3 {
		t.Fatalf("slots = %v, want 3 (one per day, none lost)", got)
	}
	// The 8th has no 02:30: the slot fires when the clock jumps, 03:00 EDT.
	if jump := time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC); !got[0].Equal(jump) {
		t.Errorf("spring-forward slot = %s, want %s (03:00 EDT)", got[0].In(ny), jump.In(ny))
	}
	for i, slot := range got {
		if day := slot.In(ny).Day(); day != 8+i {
			t.Errorf("slot %d on day %d, want %d", i, day, 8+i)
		}
	}
}

// Fall back in New York: 2026-11-01 02:00 EDT returns to 01:00 EST, so 01:30
// happens twice.
func TestDSTFallBackRunsOnce(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	s := mustSchedule(t, "0 30 1 * * *", ny)
	from := time.Date(2026, 10, 31, 12, 0, 0, 0, ny)
	got := slotsBetween(s, from, from.Add(48*time.Hour))
	if len(got) != 2 {
		t.Fatalf("slots = %v, want 2 (01:30 on the 1st once, and on the 2nd)", got)
	}
	if first := time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC); !got[0].Equal(first) {
		t.Errorf("fall-back slot = %s, want the first 01:30 (EDT) = %s", got[0], first)
	}
	// Starting inside the repeated hour, after the first 01:30, finds no
	// second 01:30.
	inRepeat := time.Date(2026, 11, 1, 6, 15, 0, 0, time.UTC) // 01:15 EST
	if n := s.Next(inRepeat); n.In(ny).Day() != 2 {
		t.Errorf("Next(01:15 EST) = %s, want the 2nd (01:30 already ran at EDT)", n.In(ny))
	}
	// Every per-minute wall time of the repeated hour fires exactly once.
	m := mustSchedule(t, "0 * * * * *", ny)
	seen := map[string]int{}
	for _, slot := range slotsBetween(m, time.Date(2026, 11, 1, 4, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)) {
		seen[slot.In(ny).Format("15:04")]++
	}
	for wall, n := range seen {
		if n != 1 {
			t.Errorf("wall time %s fired %d times", wall, n)
		}
	}
	if len(seen) != 180 { // 00:00..02:59 wall, each once (the repeated hour once)
		t.Errorf("distinct wall minutes = %d, want 180", len(seen))
	}
}

func TestEverySlotsAlignAcrossProcesses(t *testing.T) {
	s := mustSchedule(t, "@every 10s", time.UTC)
	a := s.Next(time.Date(2026, 1, 1, 0, 0, 3, 0, time.UTC))
	b := s.Next(time.Date(2026, 1, 1, 0, 0, 7, 0, time.UTC))
	if !a.Equal(b) || a.Second() != 10 {
		t.Fatalf("@every 10s slots differ by start time: %s vs %s", a, b)
	}
}
