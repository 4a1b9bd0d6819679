package jobs

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// parser accepts five or six fields (seconds optional) and descriptors such
// as @daily and @every 1h.
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is a parsed cron expression in one time zone.
//
// Field schedules are evaluated on the wall clock of the zone, so daylight
// saving time behaves as operators expect: a wall-clock time that does not
// exist (spring forward) fires once at the instant the clock jumps, and a
// wall-clock time that occurs twice (fall back) fires once, at its first
// occurrence. @every schedules are evaluated on elapsed time, aligned to
// multiples of the interval since the zero time, so every replica computes the
// same slots.
type Schedule struct {
	expr  string
	loc   *time.Location
	spec  *cron.SpecSchedule // nil for @every
	every time.Duration
}

// ParseSchedule parses expr for the zone loc. It rejects expressions that
// carry their own zone (use the timezone setting) and ones that never fire.
func ParseSchedule(expr string, loc *time.Location) (*Schedule, error) {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, fmt.Errorf("cron expression %q sets its own time zone: remove the prefix and use --timezone", expr)
	}
	if expr == "" {
		return nil, errors.New("cron expression is empty: give 5 or 6 fields (seconds optional) or a descriptor such as @daily")
	}
	sched, err := parser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("cron expression %q is not valid (%v): give 5 or 6 fields (seconds optional) or a descriptor such as @daily", expr, err)
	}
	s := &Schedule{expr: expr, loc: loc}
	switch v := sched.(type) {
	case *cron.SpecSchedule:
		spec := *v
		spec.Location = time.UTC // we feed it wall-clock times dressed as UTC
		s.spec = &spec
	case cron.ConstantDelaySchedule:
		s.every = v.Delay
	default:
		return nil, fmt.Errorf("cron expression %q has an unsupported form", expr)
	}
	if s.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("cron expression %q never fires (no matching date within five years): check the day and month fields", expr)
	}
	return s, nil
}

// String returns the expression as written.
func (s *Schedule) String() string { return s.expr }

// Location returns the schedule's zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// Next returns the first slot strictly after t, or the zero time if there is
// none within five years.
func (s *Schedule) Next(t time.Time) time.Time {
	if s.every > 0 {
		return t.Truncate(s.every).Add(s.every)
	}
	w := wall(t.In(s.loc))
	for {
		nw := s.spec.Next(w)
		if nw.IsZero() {
			return time.Time{}
		}
		r := time.Date(nw.Year(), nw.Month(), nw.Day(), nw.Hour(), nw.Minute(), nw.Second(), 0, s.loc)
		if !wall(r).Equal(nw) {
			// nw falls in a gap (spring forward): fire when the gap ends,
			// whichever side of it time.Date normalised to.
			start, end := r.ZoneBounds()
			if wall(r).Before(nw) {
				r = end
			} else {
				r = start
			}
		}
		if r.After(t) {
			return r
		}
		// nw lies in a repeated hour whose first occurrence is already behind t.
		w = nw
	}
}

// Prev returns the latest slot at or before t, or the zero time if there is
// none within five years.
func (s *Schedule) Prev(t time.Time) time.Time {
	for _, back := range []time.Duration{time.Minute, time.Hour, 25 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour, 5 * 367 * 24 * time.Hour} {
		n := s.Next(t.Add(-back))
		if n.IsZero() || n.After(t) {
			continue
		}
		for {
			m := s.Next(n)
			if m.IsZero() || m.After(t) {
				return n
			}
			n = m
		}
	}
	return time.Time{}
}

// wall returns t's wall-clock reading as a UTC time.
func wall(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}
