package main

import (
	"archive/zip"
	"fmt"
	"slices"
	"strings"
)

// readZones lists the zones of a zoneinfo.zip (Go's zone database, the one
// time/tzdata embeds), sorted.
func readZones(path string) ([]string, error) {
	z, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("zone database: %w", err)
	}
	defer z.Close()
	var zones []string
	for _, f := range z.File {
		if !strings.HasSuffix(f.Name, "/") {
			zones = append(zones, f.Name)
		}
	}
	if len(zones) == 0 {
		return nil, fmt.Errorf("zone database %s holds no zones", path)
	}
	slices.Sort(zones)
	return zones, nil
}

// zoneRule accepts what pkg/spec accepts of spec.timeZone wherever the
// controller runs: "" (the controller's --timezone) and the zones of Go's
// database, which time/tzdata embeds in the controller. "Local" is not one
// (pkg/spec refuses it), and neither are names only a host's own
// /usr/share/zoneinfo holds (posix/..., right/...).
func zoneRule(zones []string) map[string]any {
	quoted := make([]string, len(zones))
	for i, z := range zones {
		quoted[i] = "'" + z + "'"
	}
	return map[string]any{
		"rule":    "self == '' || self in [" + strings.Join(quoted, ", ") + "]",
		"message": "not a time zone the controller knows: use an IANA name such as UTC or Europe/Berlin",
	}
}

// scheduleRule accepts the schedules jobs.ParseSchedule accepts (see
// scheduleRegexp); the CEL string is raw, so the expression is as written.
func scheduleRule() map[string]any {
	return map[string]any{
		"rule": "self.matches(r'" + scheduleRegexp() + "')",
		"message": "not a schedule: give 5 cron fields (minute hour day-of-month month day-of-week) with values in range, " +
			"or 6 with seconds first, such as \"0 5 * * *\"; or @yearly, @annually, @monthly, @weekly, @daily, @midnight, " +
			"@hourly, or @every with a duration such as @every 1h",
	}
}

// The parts of the schedule's grammar, as robfig/cron v3 (with the options
// jobs.ParseSchedule gives it) reads an expression after strings.TrimSpace:
// fields split by strings.Fields; a field is items split by commas (empty
// items dropped, none at all allowed); an item is "*" or "?" (anything after a "-" ignored) or a
// value or range of values, with an optional "/step"; a value is a name
// (month and day-of-week fields, any case) or what strconv.Atoi reads (a
// "+", leading zeros); a step is 1 or more. What a regular expression cannot
// say is left to the controller: a range whose start is beyond its end, and
// a schedule that never fires (such as 30 February).
const (
	// space is unicode.IsSpace: what strings.Fields splits on and
	// strings.TrimSpace trims.
	space = `[\t\n\v\f\r \x{85}\p{Z}]`
	// rest is what may follow "*-" in an item: the parser ignores it.
	rest = `[^,/\t\n\v\f\r \x{85}\p{Z}]*`
	// step is a positive integer.
	step = `\+?0*[1-9][0-9]*`
	// duration is what time.ParseDuration accepts.
	duration = `[-+]?(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\x{b5}s|\x{3bc}s|ms|s|m|h))+)`
)

// A field's values: the integers in range, as decimal digits, and names.
// (strings.ToLower maps U+0130, capital I with dot, to "i": "FRİ" is Friday.)
var (
	sixty = field(`[1-5]?[0-9]`, "")
	hours = field(`1?[0-9]|2[0-3]`, "")
	days  = field(`[1-9]|[12][0-9]|3[01]`, "")
	month = field(`[1-9]|1[0-2]`, `jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec`)
	wdays = field(`[0-6]`, `sun|mon|tue|wed|thu|fr[i\x{130}]|sat`)
)

// field is the expression of one field whose values are the integers digits
// matches (without sign or leading zeros) and the names (case-insensitive).
func field(digits, names string) string {
	value := `\+?0*(?:` + digits + `)`
	if names != "" {
		value = `(?:` + value + `|(?i:` + names + `))`
	}
	item := `(?:[*?](?:-` + rest + `)?|` + value + `(?:-` + value + `)?)(?:/` + step + `)?`
	// Only commas is a field too: no value (so the day fields' other one
	// decides, as for "?").
	return `(?:,+|,*` + item + `(?:,+` + item + `)*,*)`
}

// scheduleRegexp is the expression of a schedule: 5 fields or 6 (seconds
// first), or a descriptor, with space around.
func scheduleRegexp() string {
	cron := `(?:` + sixty + space + `+)?` + sixty + space + `+` + hours + space + `+` + days + space + `+` +
		month + space + `+` + wdays
	descriptor := `@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)|@every ` + duration
	return `^` + space + `*(?:` + cron + `|` + descriptor + `)` + space + `*$`
}
