package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/leasecron/leasecron/pkg/jobs"
)

// FieldError is one problem with one field of one job.
type FieldError struct {
	// Job is the job's name (empty if it has none yet).
	Job string
	// Field is the field's path, such as spec.sql.statements[0].
	Field string
	// Msg says what is wrong and how to fix it.
	Msg string
}

func (e *FieldError) Error() string {
	if e.Job == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
	return fmt.Sprintf("job %s: %s: %s", e.Job, e.Field, e.Msg)
}

// Errorf returns a FieldError for job's field.
func Errorf(job, field, format string, args ...any) error {
	return &FieldError{Job: job, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Env is what building a job may depend on beyond its spec.
type Env struct {
	// Location is the zone of a job that names none. Default UTC.
	Location *time.Location
	// Defaults fill what a job's spec leaves unset (the controller's
	// --catch-up-window, --catch-up-limit and --job-timeout); zero fields
	// fall back to jobs.DefaultPolicy.
	Defaults jobs.Policy
	// Dialect is the ledger database's dialect (model.SQLite, …), for kinds
	// whose rules depend on it; empty when unknown.
	Dialect string
	// LookupEnv reads an environment variable. Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Log is where a kind's work logs (a command's output, say). Default
	// slog.Default().
	Log *slog.Logger
}

// Job is what a Kind builds from: the spec with its name, zone and filled
// policy, ready to check the kind's own field.
type Job struct {
	*ScheduledJob
	Location *time.Location
	Policy   jobs.Policy
	Env      Env
}

// Errorf returns a FieldError for j's field.
func (j Job) Errorf(field, format string, args ...any) error {
	return Errorf(j.Name, field, format, args...)
}

// Kind is one kind of job: it validates its field of the spec and builds
// the work (a jobs.TxJob or a jobs.Job). Kinds live in their own packages
// and register in a Catalog; the engine never names one.
type Kind interface {
	// Name is the kind's field in JobSpec, such as "sql".
	Name() string
	// Build checks the kind's field of j, returning FieldErrors (several
	// joined with errors.Join), and returns the work.
	Build(j Job) (any, error)
}

// Catalog holds the kinds a controller knows.
type Catalog struct {
	kinds map[string]Kind
}

// NewCatalog returns a catalog of kinds.
func NewCatalog(kinds ...Kind) *Catalog {
	c := &Catalog{kinds: map[string]Kind{}}
	for _, k := range kinds {
		c.kinds[k.Name()] = k
	}
	return c
}

// Names lists the kinds, sorted.
func (c *Catalog) Names() []string {
	var n []string
	for k := range c.kinds {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// Definitions validates every job and builds the engine's definitions. It
// reports every problem, one error each (joined), and builds nothing if
// there is one.
func (c *Catalog) Definitions(list []ScheduledJob, env Env) ([]jobs.Definition, error) {
	var (
		errs []error
		defs []jobs.Definition
		seen = map[string]bool{}
	)
	for i := range list {
		j := &list[i]
		if j.Name != "" && seen[j.Name] {
			errs = append(errs, Errorf(j.Name, "metadata.name", "defined twice: give each job its own name"))
			continue
		}
		seen[j.Name] = true
		d, err := c.Definition(j, env)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		defs = append(defs, d)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return defs, nil
}

// Definition validates one job and builds its definition.
func (c *Catalog) Definition(sj *ScheduledJob, env Env) (jobs.Definition, error) {
	name := sj.Name
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, Errorf(name, field, format, args...))
	}
	if name == "" {
		bad("metadata.name", "missing: every job needs a name (a DNS-1123 label such as nightly-rollup)")
	} else if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		bad("metadata.name", "%q is not a DNS-1123 label: %s", name, strings.Join(msgs, "; "))
	}
	if env.Location == nil {
		env.Location = time.UTC
	}
	if env.LookupEnv == nil {
		env.LookupEnv = os.LookupEnv
	}
	if env.Log == nil {
		env.Log = slog.Default()
	}
	s := &sj.Spec
	loc := env.Location
	if s.TimeZone != "" {
		l, err := time.LoadLocation(s.TimeZone)
		if err != nil || strings.EqualFold(s.TimeZone, "local") {
			bad("spec.timeZone", "%q is not a known time zone: use an IANA name such as UTC or Europe/Berlin", s.TimeZone)
		} else {
			loc = l
		}
	}
	var sched *jobs.Schedule
	if strings.TrimSpace(s.Schedule) == "" {
		bad("spec.schedule", "missing: give a cron expression such as \"0 5 * * *\", or @daily, or @every 1h")
	} else if sc, err := jobs.ParseSchedule(s.Schedule, loc); err != nil {
		bad("spec.schedule", "%v", err)
	} else {
		sched = sc
	}
	p := policy(s, env.Defaults, bad)
	kinds := s.Kinds()
	var kind Kind
	switch {
	case len(kinds) == 0:
		bad("spec", "no kind: set exactly one of %s", strings.Join(c.Names(), ", "))
	case len(kinds) > 1:
		bad("spec", "two kinds (%s): set exactly one", strings.Join(kinds, " and "))
	case c.kinds[kinds[0]] == nil:
		bad("spec."+kinds[0], "this controller does not run %s jobs: it runs %s", kinds[0], strings.Join(c.Names(), ", "))
	default:
		kind = c.kinds[kinds[0]]
	}
	var work any
	if kind != nil {
		w, err := kind.Build(Job{ScheduledJob: sj, Location: loc, Policy: p, Env: env})
		if err != nil {
			errs = append(errs, err)
		}
		work = w
	}
	if len(errs) > 0 {
		return jobs.Definition{}, errors.Join(errs...)
	}
	return jobs.Definition{Name: name, Schedule: sched, Policy: p, Work: work, Kind: kind.Name(), Revision: revision(sj)}, nil
}

// policy turns the spec's policy fields into a jobs.Policy with every field
// filled from the spec, else defaults, else jobs.DefaultPolicy.
func policy(s *JobSpec, defaults jobs.Policy, bad func(field, format string, args ...any)) jobs.Policy {
	base := jobs.DefaultPolicy()
	pick := func(d, fallback time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return fallback
	}
	p := jobs.Policy{
		Suspend:       s.Suspend,
		CatchUpWindow: pick(defaults.CatchUpWindow, base.CatchUpWindow),
		CatchUpLimit:  defaults.CatchUpLimit,
		Timeout:       pick(defaults.Timeout, base.Timeout),
		Attempts:      defaults.Attempts,
		RetryInitial:  pick(defaults.RetryInitial, base.RetryInitial),
		RetryMax:      pick(defaults.RetryMax, base.RetryMax),
		// Negative (jobs.KeepHistory) is a value here, not a default.
		HistoryRetention: defaults.HistoryRetention,
	}
	if p.HistoryRetention == 0 {
		p.HistoryRetention = base.HistoryRetention
	}
	if p.CatchUpLimit == 0 {
		p.CatchUpLimit = base.CatchUpLimit
	}
	duration := func(field string, v time.Duration, into *time.Duration) {
		if v <= 0 {
			bad(field, "must be a positive duration such as 30s or 10m (got %s)", v)
		} else {
			*into = v
		}
	}
	count := func(field string, n *int32, into *int) {
		if *n <= 0 {
			bad(field, "must be 1 or more (got %d)", *n)
		} else {
			*into = int(*n)
		}
	}
	if c := s.CatchUp; c != nil {
		if c.Window != nil {
			duration("spec.catchUp.window", c.Window.Duration, &p.CatchUpWindow)
		}
		if c.Limit != nil {
			count("spec.catchUp.limit", c.Limit, &p.CatchUpLimit)
		}
	}
	if s.Timeout != nil {
		duration("spec.timeout", s.Timeout.Duration, &p.Timeout)
	}
	if r := s.HistoryRetention; r != nil {
		switch {
		case r.Duration < 0:
			bad("spec.historyRetention", "must be 0s (keep forever) or a positive duration such as 168h (got %s)", r.Duration)
		case r.Duration == 0:
			p.HistoryRetention = jobs.KeepHistory
		default:
			p.HistoryRetention = r.Duration
		}
	}
	if r := s.Retries; r != nil {
		if r.Limit != nil {
			count("spec.retries.limit", r.Limit, &p.Attempts)
		}
		if b := r.Backoff; b != nil {
			if b.Initial != nil {
				duration("spec.retries.backoff.initial", b.Initial.Duration, &p.RetryInitial)
			}
			if b.Max != nil {
				duration("spec.retries.backoff.max", b.Max.Duration, &p.RetryMax)
			}
			if b.Initial != nil && b.Max != nil && b.Max.Duration > 0 && b.Max.Duration < b.Initial.Duration {
				bad("spec.retries.backoff.max", "%s is below initial %s: make max at least initial", b.Max.Duration, b.Initial.Duration)
			}
		}
	}
	if p.RetryMax < p.RetryInitial {
		p.RetryMax = p.RetryInitial
	}
	return p
}

// revision identifies a spec's content, so that an edit of any field is a
// change to the engine.
func revision(sj *ScheduledJob) string {
	b, _ := json.Marshal(sj.Spec)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
