package cli

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/metrics"
)

// jobsFilePoll is how often run looks at the jobs file. Polling the content
// works where change notifications do not: a Kubernetes ConfigMap volume
// swaps a symlink to a new directory, an editor renames over the file.
const jobsFilePoll = time.Second

// jobsWatcher applies edits of the jobs file to a running scheduler.
type jobsWatcher struct {
	opts    *jobsOptions
	dialect string
	sched   *jobs.Scheduler
	db      *gorm.DB
	metrics *metrics.Metrics
	log     *slog.Logger
	scrub   func(error) error
	// last is the content of the set that runs; bad, of the last content
	// that could not be loaded (reported once).
	last, bad [sha256.Size]byte
}

func (w *jobsWatcher) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.check(ctx)
	}
}

// check reloads the file if its content changed. A file that cannot be
// loaded leaves the running set as it is: the problem is logged once per
// content and shown by leasecron_jobs_file_invalid.
func (w *jobsWatcher) check(ctx context.Context) {
	b, err := os.ReadFile(w.opts.jobsFile)
	sum := sha256.Sum256(b)
	if err == nil && sum == w.last {
		if w.bad != ([sha256.Size]byte{}) { // edited back to the running set
			w.bad = [sha256.Size]byte{}
			w.metrics.JobsFileErrors.Set(0)
			w.log.Info("jobs file is back to the jobs that run", "file", w.opts.jobsFile)
		}
		return
	}
	if err == nil && sum == w.bad {
		return
	}
	set, err := w.opts.load(w.dialect)
	if err == nil {
		err = jobs.Migrate(ctx, w.db, set.defs)
		if err != nil {
			err = w.scrub(err)
		}
	}
	before := w.sched.Definitions()
	if err == nil {
		err = w.sched.Set(set.defs)
	}
	if err != nil {
		if w.bad != sum {
			w.bad = sum
			w.metrics.JobsFileErrors.Set(1)
			w.log.Error("jobs file not applied: the jobs that ran before keep running; fix the file",
				"file", w.opts.jobsFile, "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		return
	}
	w.last, w.bad = set.fileSum, [sha256.Size]byte{}
	w.metrics.JobsFileErrors.Set(0)
	w.metrics.JobsLoaded.Set(float64(len(set.defs)))
	added, changed, removed := jobs.Diff(before, set.defs)
	for _, name := range removed {
		w.metrics.Forget(name)
	}
	w.log.Info("jobs file applied", "file", w.opts.jobsFile, "jobs", len(set.defs),
		"added", strings.Join(added, ","), "changed", strings.Join(changed, ","), "removed", strings.Join(removed, ","))
}
