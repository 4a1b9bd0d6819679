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
// saving time behaves as operators expect, in every zone (east and west of
// UTC alike):
//
//   - A wall-clock time that does not exist (spring forward) fires once, at
//     the instant the clock jumps.
//   - A wall-clock time that occurs twice (fall back) fires once, at its
//     first occurrence, when the schedule names its hours ("0 30 2 * * *",
//     "@daily", "0 */2 * * *"): 02:30 is a time of day, and the day has it
//     once.
//   - A schedule whose hour field is * ("30 * * * *", "*/5 * * * *",
//     "@hourly") means "every hour", and follows elapsed time through the
//     repeated hour: it fires in both passes, so an hourly job runs 25 times
//     on the long day and no hour goes without its run (Vixie cron, too,
//     runs wildcard jobs in both passes and fixed-time jobs once).
//
// robfig/cron's own SpecSchedule.Next converts wall times with time.Date,
// which picks the second occurrence of a repeated time east of UTC and the
// first west of it; so it is used only to find matching wall-clock times
// (in UTC, which has no transitions), and Next maps them to instants itself,
// one zone offset period at a time.
//
// @every schedules are evaluated on elapsed time, aligned to multiples of the
// interval since the zero time, so every replica computes the same slots.
type Schedule struct {
	expr      string
	loc       *time.Location
	spec      *cron.SpecSchedule // nil for @every
	everyHour bool               // the hour field matches every hour
	every     time.Duration
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
		const allHours = 1<<24 - 1
		s.everyHour = spec.Hour&allHours == allHours
	case cron.ConstantDelaySchedule:
		// robfig/cron turns what is not a whole number of seconds, 1 or
		// more, into one that is (@every -1h runs every second): refuse it.
		if d, err := time.ParseDuration(strings.TrimPrefix(expr, "@every ")); err != nil || d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("cron expression %q is not valid: @every needs a whole number of seconds, 1s or more, such as @every 90s or @every 1h", expr)
		}
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
//
// It walks the zone's offset periods from the one holding t. Within a period
// the wall clock maps one to one onto instants; at a period's start the
// clock either jumped forward (the skipped wall times fire at the jump) or
// back (the repeated wall times fire again only for an every-hour schedule).
func (s *Schedule) Next(t time.Time) time.Time {
	if s.every > 0 {
		return t.Truncate(s.every).Add(s.every)
	}
	limit := t.AddDate(5, 0, 0)
	from := wall(t.In(s.loc)) // find wall times strictly after this
	for u := t.In(s.loc); !u.After(limit); {
		start, end := u.ZoneBounds()
		_, off := u.Zone()
		offset := time.Duration(off) * time.Second
		if !start.IsZero() {
			_, prevOff := start.Add(-time.Nanosecond).Zone()
			// The wall clock just after the period began, and just before.
			startWall := start.UTC().Add(offset)
			prevEndWall := start.UTC().Add(time.Duration(prevOff) * time.Second)
			if start.After(t) {
				// Entered this period from the one before: search from its start.
				from = startWall.Add(-time.Nanosecond)
				if startWall.After(prevEndWall) {
					// Spring forward: wall times in [prevEndWall, startWall)
					// do not exist and fire at the jump.
					if nw := s.spec.Next(prevEndWall.Add(-time.Nanosecond)); !nw.IsZero() && nw.Before(startWall) {
						return start
					}
				}
			}
			if startWall.Before(prevEndWall) && !s.everyHour && from.Before(prevEndWall) {
				// Fall back: wall times in [startWall, prevEndWall) already
				// fired in the period before, at their first occurrence.
				from = prevEndWall.Add(-time.Nanosecond)
			}
		}
		nw := s.spec.Next(from)
		if nw.IsZero() {
			return time.Time{}
		}
		if end.IsZero() || nw.Before(end.UTC().Add(offset)) {
			return nw.Add(-offset).In(s.loc)
		}
		u = end.In(s.loc)
	}
	return time.Time{}
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
