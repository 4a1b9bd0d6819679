package sqljob

import (
	"slices"
	"testing"
	"time"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// The parameters become the dialect's placeholders, in order, a name used
// twice bound twice; text in strings, identifiers and comments is left as
// written, and a terminating ';' and what follows it is not sent.
func TestRewrite(t *testing.T) {
	src := "SELECT @slot, 'x@slot', @key /* @job */, x@slot_date, @slot; -- done"
	for _, tc := range []struct {
		dialect, want string
	}{
		{model.Postgres, "SELECT $1, 'x@slot', $2 /* @job */, x $3, $4"},
		{model.MySQL, "SELECT ?, 'x@slot', ? /* @job */, x?, ?"},
		{model.SQLite, "SELECT ?, 'x@slot', ? /* @job */, x?, ?"},
	} {
		s, problems := compileOne(src, tc.dialect)
		if len(problems) > 0 {
			t.Fatalf("%s: %v", tc.dialect, problems)
		}
		if s.query != tc.want {
			t.Errorf("%s: query = %q, want %q", tc.dialect, s.query, tc.want)
		}
		if want := []param{paramSlot, paramKey, paramSlotDate, paramSlot}; !slices.Equal(s.params, want) {
			t.Errorf("%s: params = %v, want %v", tc.dialect, s.params, want)
		}
	}
}

// A MariaDB/MySQL executable comment is code: its content is sent, and the
// parameters in it are rewritten.
func TestRewriteExecutableComment(t *testing.T) {
	s, problems := compileOne("SELECT /*!50700 @job, */ 1", model.MySQL)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if want := "SELECT /*!50700 ?, */ 1"; s.query != want || len(s.params) != 1 {
		t.Fatalf("query = %q with %d params, want %q with 1", s.query, len(s.params), want)
	}
}

func TestParameterValues(t *testing.T) {
	slot := jobs.Slot{
		Job:  "j",
		Time: time.Date(2026, 3, 14, 20, 0, 0, 0, time.FixedZone("x", 3600)),
		Prev: time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC),
		Date: model.Date{Year: 2026, Month: 3, Day: 15},
		Key:  "j@2026-03-14T19:00:00Z",
	}
	if v := paramSlot.value(slot).(time.Time); v.Location() != time.UTC || !v.Equal(slot.Time) {
		t.Errorf("@slot = %v, want %v in UTC", v, slot.Time)
	}
	if v := paramSlotDate.value(slot); v != "2026-03-15" {
		t.Errorf("@slot_date = %v", v)
	}
	if v := paramPrevSlot.value(slot).(time.Time); !v.Equal(slot.Prev) {
		t.Errorf("@prev_slot = %v", v)
	}
	if v := paramJob.value(slot); v != "j" {
		t.Errorf("@job = %v", v)
	}
	if v := paramKey.value(slot); v != slot.Key {
		t.Errorf("@key = %v", v)
	}
	slot.Prev = time.Time{}
	if v := paramPrevSlot.value(slot); v != nil {
		t.Errorf("@prev_slot of a slot without one = %v, want NULL", v)
	}
}

func TestServerLimitLeavesTheServerTheFirstWord(t *testing.T) {
	for _, tc := range []struct{ left, want time.Duration }{
		{time.Second, 900 * time.Millisecond},
		{time.Hour, time.Hour - time.Second},
		{time.Microsecond, time.Millisecond}, // never 0, which means no limit
	} {
		if got := serverLimit(tc.left); got != tc.want {
			t.Errorf("serverLimit(%s) = %s, want %s", tc.left, got, tc.want)
		}
	}
}
