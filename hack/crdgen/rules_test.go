package main

import (
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/leasecron/leasecron/pkg/jobs"
)

var scheduleRe = regexp.MustCompile(scheduleRegexp())

// parses reports whether the controller accepts a schedule.
func parses(s string) bool {
	_, err := jobs.ParseSchedule(s, time.UTC)
	return err == nil
}

// The rule's space is exactly unicode.IsSpace, rune for rune.
func TestSpaceIsUnicodeIsSpace(t *testing.T) {
	re := regexp.MustCompile(`^` + space + `$`)
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		if got := re.MatchString(string(r)); got != unicode.IsSpace(r) {
			t.Errorf("U+%04X: rule says space %v, unicode.IsSpace %v", r, got, !got)
		}
	}
}

// Every value of every field, in each form strconv.Atoi reads, is accepted
// by the rule exactly when the parser accepts it (in a range, when the parser
// does: whether the start is beyond the end is the parser's to say).
func TestFieldValues(t *testing.T) {
	for _, f := range []struct {
		name string
		at   func(v string) string // a schedule with v in the field
	}{
		{"second", func(v string) string { return v + " 0 0 * * *" }},
		{"minute", func(v string) string { return v + " 0 * * *" }},
		{"hour", func(v string) string { return "0 " + v + " * * *" }},
		{"day of month", func(v string) string { return "0 0 " + v + " * *" }},
		{"month", func(v string) string { return "0 0 1 " + v + " *" }},
		{"day of week", func(v string) string { return "0 0 * * " + v }},
	} {
		for n := 0; n <= 100; n++ {
			for _, v := range []string{strconv.Itoa(n), "0" + strconv.Itoa(n), "+" + strconv.Itoa(n), "+00" + strconv.Itoa(n), "-" + strconv.Itoa(n)} {
				for _, form := range []string{v, v + "-" + v, "*/" + v, v + "/1"} {
					s := f.at(form)
					if got, want := scheduleRe.MatchString(s), parses(s); got != want {
						t.Errorf("%s %q: rule accepts %v, parser %v", f.name, s, got, want)
					}
				}
				if s := f.at("1-" + v); parses(s) && !scheduleRe.MatchString(s) {
					t.Errorf("%s %q: parser accepts, the rule refuses", f.name, s)
				}
			}
		}
	}
}

// Names: any case, and what strings.ToLower maps to them.
func TestNames(t *testing.T) {
	names := []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	days := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	// Every rune that strings.ToLower turns into an ASCII letter.
	lowers := map[rune][]rune{}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if l := []rune(strings.ToLower(string(r))); len(l) == 1 && l[0] >= 'a' && l[0] <= 'z' {
			lowers[l[0]] = append(lowers[l[0]], r)
		}
	}
	check := func(s string) {
		t.Helper()
		if got, want := scheduleRe.MatchString(s), parses(s); got != want {
			t.Errorf("%q: rule accepts %v, parser %v", s, got, want)
		}
	}
	variants := func(name string) []string {
		out := []string{name}
		for i, c := range name {
			for _, r := range lowers[c] {
				out = append(out, name[:i]+string(r)+name[i+1:])
			}
		}
		return out
	}
	for _, n := range names {
		for _, v := range variants(n) {
			check("0 0 1 " + v + " *")
			check("0 0 1 " + v + "-dec *")
			check("0 0 * " + v + " " + v) // a month's name is no day's
		}
	}
	for _, d := range days {
		for _, v := range variants(d) {
			check("0 0 * * " + v)
			check("0 0 * * sun-" + v)
		}
	}
}

// Schedules the parser accepts are all accepted by the rule; the rule
// refuses the usual mistakes.
func TestScheduleRule(t *testing.T) {
	for _, s := range []string{
		"0 5 * * *", "* * * * * *", "*/2 * * * * *", "50 0 0 * * *", "0 30 2 * * *", "0 */2 * * *",
		"5 4 * * sun", "0 0 1 JAN,Jul *", "0 0 * * MON-FRI", "0 0 ? * *", "1,2,,3, * * * *",
		"*-9/5 * * * *", "?-junk * * * *", "0 0 , * sun", "0 0 ,, * ,", "+05 +4 * * *", "007 * * * *", "0-59/15 * * * *", "5/15 * * * *",
		"  0 5 * * *\n", "0\t5 *  * *", "0\u00a05 * * *", "0\u30005 * * *",
		"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", " @daily ",
		"@every 1h", "@every 1h30m", "@every 1.5s", "@every .5s", "@every 1.s", "@every 100ms", "@every 0",
		"@every 1µs", "@every 1μs", "@every -1h", "@every +2m",
		"0 0 31 2 *", "0 5-3 * * *", // the controller refuses these: a rule cannot see them
	} {
		if !scheduleRe.MatchString(s) {
			t.Errorf("rule refuses %q", s)
		}
	}
	for _, s := range []string{
		"", " ", "61 * * * *", "* * * *", "0 0 0 * * * *", "@Daily", "@daily x", "@every", "@every 1x",
		"@every  1h", "@every 1 h", "TZ=UTC 0 5 * * *", "CRON_TZ=UTC 0 5 * * *", "0 24 * * *",
		"0 0 0 * *", "0 0 * 13 *", "0 0 * * 7", "*/0 * * * *", "5 4 * * fry", "1-2-3 * * * *",
		"1/2/3 * * * *", "*/ * * * *", "0  5 * *", "L * * * *", "0 0 * * 1#2", "every day", "-1 * * * *",
	} {
		if scheduleRe.MatchString(s) {
			t.Errorf("rule accepts %q", s)
		}
		if parses(s) {
			t.Errorf("parser accepts %q: the rule must too", s)
		}
	}
}

// Random expressions from the grammar's pieces, with noise: whatever the
// parser accepts, the rule accepts.
func TestScheduleRuleRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	num := func() string {
		n := rng.IntN(7)
		if rng.IntN(5) == 0 {
			n = rng.IntN(66)
		}
		return pick("", "", "", "", "", "+", "0", "00") + strconv.Itoa(n)
	}
	value := func() string {
		if rng.IntN(10) == 0 {
			return pick("jan", "Feb", "DEC", "sun", "Mon", "FRI", "xyz", "L")
		}
		return num()
	}
	item := func() string {
		var s string
		switch rng.IntN(4) {
		case 0:
			s = pick("*", "*", "*", "?", "*-", "*-junk", "**")
		case 1:
			s = value() + "-" + value()
		default:
			s = value()
		}
		if rng.IntN(3) == 0 {
			s += "/" + num()
		}
		if rng.IntN(50) == 0 {
			s += pick("#", "=", "/", "-", "@")
		}
		return s
	}
	field := func() string {
		parts := []string{item()}
		for rng.IntN(3) == 0 {
			parts = append(parts, item())
		}
		return pick("", "", "", ",") + strings.Join(parts, pick(",", ",", ",,")) + pick("", "", "", ",")
	}
	accepted := 0
	for range 100000 {
		var fields []string
		for range []int{4, 5, 5, 5, 6, 6, 6, 7}[rng.IntN(8)] {
			fields = append(fields, field())
		}
		s := strings.Join(fields, pick(" ", " ", " ", "  ", "\t", "\u00a0"))
		if parses(s) {
			accepted++
			if !scheduleRe.MatchString(s) {
				t.Errorf("parser accepts %q, the rule refuses it", s)
			}
		}
	}
	if accepted < 2000 {
		t.Fatalf("only %d of the random expressions parse: the test says little", accepted)
	}
	t.Logf("%d of 100000 random expressions parse", accepted)
}

// FuzzScheduleRule: the rule accepts every schedule the parser accepts.
func FuzzScheduleRule(f *testing.F) {
	for _, s := range []string{"0 5 * * *", "*/2 * * * * *", "@every 1h", "0 0 1 jan-mar mon", "*-x/3 ? * * *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if parses(s) && !scheduleRe.MatchString(s) {
			t.Fatalf("parser accepts %q, the rule refuses it", s)
		}
	})
}

// zoneinfo is the zone database of the Go that runs the test.
func zoneinfo(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "lib", "time", "zoneinfo.zip")
}

// Every zone of the rule is one pkg/spec accepts, "Local" is not among them.
func TestZones(t *testing.T) {
	zones, err := readZones(zoneinfo(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(zones) < 400 || !slices.Contains(zones, "UTC") || !slices.Contains(zones, "Europe/Berlin") {
		t.Fatalf("%d zones (%v...): want Go's database, with UTC and Europe/Berlin", len(zones), zones[:3])
	}
	for _, z := range zones {
		if _, err := time.LoadLocation(z); err != nil || strings.EqualFold(z, "local") {
			t.Errorf("zone %q: LoadLocation: %v", z, err)
		}
	}
	rule := zoneRule(zones)["rule"].(string)
	for _, want := range []string{"self == ''", "'Europe/Berlin'", "'America/Argentina/ComodRivadavia'"} {
		if !strings.Contains(rule, want) {
			t.Errorf("zone rule does not hold %s", want)
		}
	}
}
