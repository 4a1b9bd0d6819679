package httpjob_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/enginetest"
	"github.com/leasecron/leasecron/pkg/httpjob"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// receiver and delivery are testenv's: a real HTTP server of the test's own.
type (
	receiver = testenv.Receiver
	delivery = testenv.Delivery
)

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) *receiver {
	return testenv.NewReceiver(t, answer)
}

func perKey(ds []delivery) map[string]int { return testenv.PerKey(ds) }

func answer(status int, body string) func(w http.ResponseWriter, r *http.Request, n int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func ptr[T any](v T) *T { return &v }

const jobName = "hook"

// newJob returns a job named hook at 00:30 in Berlin (the slot's date in
// the job's zone is a day after its UTC date) with h as its http field.
func newJob(h *spec.HTTP) *spec.ScheduledJob {
	return &spec.ScheduledJob{
		ObjectMeta: metav1.ObjectMeta{Name: jobName},
		Spec: spec.JobSpec{
			Schedule: "30 0 * * *",
			TimeZone: "Europe/Berlin",
			Retries:  &spec.Retries{Limit: ptr(int32(1))},
			HTTP:     h,
		},
	}
}

// The slot the engine tests run: 00:30 in Berlin on 2026-03-10.
var (
	slot     = time.Date(2026, 3, 9, 23, 30, 0, 0, time.UTC)
	prevSlot = time.Date(2026, 3, 8, 23, 30, 0, 0, time.UTC)
	slotDate = "2026-03-10"
	slotKey  = jobs.SlotKey(jobName, slot)
)

func definition(t *testing.T, sj *spec.ScheduledJob, env spec.Env) jobs.Definition {
	t.Helper()
	def, err := spec.NewCatalog(httpjob.Kind{}).Definition(sj, env)
	if err != nil {
		t.Fatalf("building the job: %v", err)
	}
	return def
}

// work returns a valid job's work, to run without the engine.
func work(t *testing.T, h *spec.HTTP, env spec.Env) jobs.Job {
	t.Helper()
	w, ok := definition(t, newJob(h), env).Work.(jobs.Job)
	if !ok {
		t.Fatal("the http kind's work is not a jobs.Job")
	}
	return w
}

// slotOf is the context the engine gives the work for the test's slot.
func slotOf(attempt int) jobs.Slot {
	loc, _ := time.LoadLocation("Europe/Berlin")
	return jobs.Slot{Job: jobName, Time: slot, Prev: prevSlot, Date: model.DateOf(slot.In(loc)), Location: loc,
		Key: slotKey, Attempt: attempt}
}

func openDB(t *testing.T, dialect string) *gorm.DB { return enginetest.OpenDB(t, dialect) }

// engine is a scheduler of one http job on a fresh database, leading.
type engine struct {
	db    *gorm.DB
	sched *jobs.Scheduler
	fence jobs.Fence
	log   *strings.Builder // what the scheduler logged
	def   jobs.Definition
}

func newEngine(t *testing.T, dialect string, sj *spec.ScheduledJob) *engine {
	t.Helper()
	e := &engine{db: openDB(t, dialect), log: &strings.Builder{}, def: definition(t, sj, spec.Env{})}
	e.sched = newScheduler(t, e.db, "holder", e.def, e.log)
	f, err := e.sched.Ledger().BeginTerm(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	e.fence = f
	return e
}

func newScheduler(t *testing.T, db *gorm.DB, holder string, def jobs.Definition, log io.Writer) *jobs.Scheduler {
	return enginetest.Scheduler(t, db, holder, def, slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// run runs the test's slot under the engine's fence.
func (e *engine) run(t *testing.T) (jobs.Outcome, error) {
	t.Helper()
	return e.runAt(t, slot)
}

// runAt runs the slot at under the engine's fence.
func (e *engine) runAt(t *testing.T, at time.Time) (jobs.Outcome, error) {
	return enginetest.RunAt(t, e.sched, e.fence, jobName, at)
}

// rows returns the ledger's rows of the test's job.
func rows(t *testing.T, db *gorm.DB) []jobs.JobRun { return enginetest.Rows(t, db, jobName) }

// onlyRow returns the ledger's one row of the test's slot.
func onlyRow(t *testing.T, db *gorm.DB) jobs.JobRun {
	t.Helper()
	rs := rows(t, db)
	if len(rs) != 1 || !rs[0].Slot.Equal(slot) {
		t.Fatalf("ledger rows = %+v, want one, of slot %s", rs, slot)
	}
	return rs[0]
}
