package spec

import (
	"slices"
	"strconv"
	"time"

	"github.com/leasecron/leasecron/pkg/jobs"
)

// The names of the slot context in the environment of a job's program (the
// command and kubernetesJob kinds). A spec may not set them.
const (
	EnvSlot     = "LEASECRON_SLOT"
	EnvSlotDate = "LEASECRON_SLOT_DATE"
	EnvPrevSlot = "LEASECRON_PREV_SLOT"
	EnvJob      = "LEASECRON_JOB"
	EnvKey      = "LEASECRON_KEY"
	EnvAttempt  = "LEASECRON_ATTEMPT"
	EnvTerm     = "LEASECRON_TERM"
)

// SlotVar is one variable of the slot context.
type SlotVar struct {
	Name, Value string
}

// SlotEnvNames lists the slot context's variables, in the order SlotEnv
// returns them.
func SlotEnvNames() []string {
	return []string{EnvSlot, EnvSlotDate, EnvPrevSlot, EnvJob, EnvKey, EnvAttempt, EnvTerm}
}

// IsSlotEnvName reports whether name is one of the slot context's
// variables.
func IsSlotEnvName(name string) bool { return slices.Contains(SlotEnvNames(), name) }

// SlotEnv returns the slot context of s as environment variables, never the
// current time:
//
//	LEASECRON_SLOT       the slot's time, RFC 3339 UTC, such as 2026-03-10T04:00:00Z
//	                     (a triggered slot has its fraction: 2026-03-10T04:12:31.417Z)
//	LEASECRON_SLOT_DATE  its calendar date in the job's zone, YYYY-MM-DD
//	LEASECRON_PREV_SLOT  the schedule's slot before it, RFC 3339 UTC ("" if none)
//	LEASECRON_JOB        the job's name
//	LEASECRON_KEY        the slot's key, the same on every attempt
//	LEASECRON_ATTEMPT    the attempt's number, from 1
//	LEASECRON_TERM       the leadership term (the fence); 0 for a manual run
func SlotEnv(s jobs.Slot) []SlotVar {
	prev := ""
	if !s.Prev.IsZero() {
		prev = s.Prev.UTC().Format(time.RFC3339Nano)
	}
	return []SlotVar{
		{EnvSlot, s.Time.UTC().Format(time.RFC3339Nano)},
		{EnvSlotDate, s.Date.String()},
		{EnvPrevSlot, prev},
		{EnvJob, s.Job},
		{EnvKey, s.Key},
		{EnvAttempt, strconv.Itoa(s.Attempt)},
		{EnvTerm, strconv.FormatInt(s.Term, 10)},
	}
}
