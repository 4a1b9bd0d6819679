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
		{"@every -1h", "@every needs a whole number of seconds, 1s or more"},
		{"@every 0", "@every needs a whole number of seconds"},
		{"@every 500ms", "@every needs a whole number of seconds"},
		{"@every 1.5s", "@every needs a whole number of seconds"},
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
	// A per-minute schedule (hour field *) follows elapsed time through the
	// repeated hour: every minute of the four hours fires once, both passes
	// of 01:xx included.
	m := mustSchedule(t, "0 * * * * *", ny)
	from, to := time.Date(2026, 11, 1, 4, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	minutes := slotsBetween(m, from, to)
	if len(minutes) != 240 {
		t.Fatalf("per-minute slots in four hours = %d, want 240", len(minutes))
	}
	for i, slot := range minutes {
		if want := from.Add(time.Duration(i+1) * time.Minute); !slot.Equal(want) {
			t.Fatalf("per-minute slot %d = %s, want %s", i, slot.UTC(), want)
		}
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

// TestDSTEdges: on both DST edges of a zone east of UTC in each hemisphere
// and one west of it, a daily schedule fires once per day: a wall time the
// spring-forward skips fires at the jump, one the fall-back repeats fires at
// its first occurrence. Next and Prev agree.
func TestDSTEdges(t *testing.T) {
	for _, tc := range []struct {
		zone, edge, expr string
		day              time.Time // the calendar day of the transition, in the zone
		want             time.Time // the one slot on that day, in UTC
	}{
		// 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00Z).
		{"Europe/Berlin", "spring forward", "0 30 2 * * *", time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
		// 2026-10-25 03:00 CEST falls back to 02:00 CET (01:00Z): 02:30 CEST is 00:30Z.
		{"Europe/Berlin", "fall back", "0 30 2 * * *", time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)},
		// 2026-10-04 02:00 AEST jumps to 03:00 AEDT (16:00Z on the 3rd).
		{"Australia/Sydney", "spring forward", "0 30 2 * * *", time.Date(2026, 10, 4, 0, 0, 0, 0, time.UTC), time.Date(2026, 10, 3, 16, 0, 0, 0, time.UTC)},
		// 2026-04-05 03:00 AEDT falls back to 02:00 AEST (16:00Z on the 4th): 02:30 AEDT is 15:30Z.
		{"Australia/Sydney", "fall back", "0 30 2 * * *", time.Date(2026, 4, 5, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 4, 15, 30, 0, 0, time.UTC)},
		// 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00Z).
		{"America/New_York", "spring forward", "0 30 2 * * *", time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
		// 2026-11-01 02:00 EDT falls back to 01:00 EST (06:00Z): 01:30 EDT is 05:30Z.
		{"America/New_York", "fall back", "0 30 1 * * *", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)},
	} {
		t.Run(tc.zone+"/"+tc.edge, func(t *testing.T) {
			loc := mustLoc(t, tc.zone)
			s := mustSchedule(t, tc.expr, loc)
			midnight := time.Date(tc.day.Year(), tc.day.Month(), tc.day.Day(), 0, 0, 0, 0, loc)
			got := slotsBetween(s, midnight.AddDate(0, 0, -1), midnight.AddDate(0, 0, 2))
			if len(got) != 3 {
				t.Fatalf("slots over three days = %v, want 3 (one a day)", got)
			}
			for i, slot := range got {
				if d := slot.In(loc).Day(); d != midnight.AddDate(0, 0, i-1).Day() {
					t.Errorf("slot %d (%s) on day %d, want one slot a day", i, slot.In(loc), d)
				}
			}
			if !got[1].Equal(tc.want) {
				t.Errorf("slot on the %s day = %s (%s), want %s (%s)", tc.edge, got[1].UTC(), got[1].In(loc), tc.want, tc.want.In(loc))
			}
			if n := s.Next(midnight); !n.Equal(tc.want) {
				t.Errorf("Next(midnight) = %s, want %s", n.UTC(), tc.want)
			}
			// Prev finds the slot at it, an hour after it (in a repeated
			// hour: its second occurrence), and the day before just before it.
			for _, at := range []time.Time{tc.want, tc.want.Add(time.Hour), tc.want.Add(2 * time.Hour)} {
				if p := s.Prev(at); !p.Equal(tc.want) {
					t.Errorf("Prev(%s) = %s, want %s", at.In(loc), p.In(loc), tc.want.In(loc))
				}
			}
			if p := s.Prev(tc.want.Add(-time.Second)); !p.Equal(got[0]) {
				t.Errorf("Prev(just before the slot) = %s, want the day before's %s", p.In(loc), got[0].In(loc))
			}
		})
	}
}

// TestDSTEveryHour: a schedule whose hour field is * ("every hour at :30")
// follows elapsed hours through a fall-back: it fires in both passes of the
// repeated hour, so consecutive slots stay an hour apart (25 on the long
// day). Across a spring-forward, the skipped :30 fires at the jump.
func TestDSTEveryHour(t *testing.T) {
	for _, tc := range []struct {
		zone       string
		fall, jump time.Time // a fall-back and a spring-forward instant
	}{
		{"Europe/Berlin", time.Date(2026, 10, 25, 1, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
		{"Australia/Sydney", time.Date(2026, 4, 4, 16, 0, 0, 0, time.UTC), time.Date(2026, 10, 3, 16, 0, 0, 0, time.UTC)},
		{"America/New_York", time.Date(2026, 11, 1, 6, 0, 0, 0, time.UTC), time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.zone, func(t *testing.T) {
			loc := mustLoc(t, tc.zone)
			s := mustSchedule(t, "30 * * * *", loc)
			got := slotsBetween(s, tc.fall.Add(-3*time.Hour), tc.fall.Add(3*time.Hour))
			if len(got) != 6 {
				t.Fatalf("fall back: slots in six hours = %v, want 6", got)
			}
			for i, slot := range got {
				if want := tc.fall.Add(-150*time.Minute + time.Duration(i)*time.Hour); !slot.Equal(want) {
					t.Errorf("fall back: slot %d = %s (%s), want %s (%s)", i, slot.UTC(), slot.In(loc), want, want.In(loc))
				}
				if p := s.Prev(slot.Add(59 * time.Minute)); !p.Equal(slot) {
					t.Errorf("fall back: Prev(%s) = %s, want %s", slot.Add(59*time.Minute).In(loc), p.In(loc), slot.In(loc))
				}
			}
			// Spring forward: :30 of the hour before, the skipped :30 at the
			// jump, then :30 of the hour after.
			got = slotsBetween(s, tc.jump.Add(-time.Hour), tc.jump.Add(time.Hour))
			want := []time.Time{tc.jump.Add(-30 * time.Minute), tc.jump, tc.jump.Add(30 * time.Minute)}
			if len(got) != len(want) {
				t.Fatalf("spring forward: slots = %v, want %v", got, want)
			}
			for i := range want {
				if !got[i].Equal(want[i]) {
					t.Errorf("spring forward: slot %d = %s, want %s", i, got[i].In(loc), want[i].In(loc))
				}
			}
		})
	}
}
