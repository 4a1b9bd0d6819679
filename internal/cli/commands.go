package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// manualOptions are shared by once and backfill.
type manualOptions struct {
	db         dbOptions
	jobs       jobsOptions
	log        logOptions
	jobTimeout time.Duration
}

func (o *manualOptions) addFlags(cmd *cobra.Command) {
	o.db.addFlags(cmd.Flags())
	o.jobs.addFlags(cmd.Flags(), true)
	o.log.addFlags(cmd.Flags())
	cmd.Flags().DurationVar(&o.jobTimeout, "job-timeout", 10*time.Minute, "time limit of one attempt of a slot, for jobs that set no timeout; failed attempts are retried until it passes")
}

// manualRun is what once and backfill share once their input is valid.
type manualRun struct {
	sched *jobs.Scheduler
	db    *gorm.DB
	def   jobs.Definition
	loc   *time.Location
	close func()
}

// refusePruned fails with a usage error, before anything runs, when any of
// slots has no ledger row and lies at or before the job's horizon: its
// history was pruned, so the ledger cannot tell whether it ran. fix says
// what to do instead, given the first date whose slots are all after the
// horizon.
func (r *manualRun) refusePruned(ctx context.Context, slots []time.Time, fix func(after model.Date) string) error {
	refused, horizon, err := jobs.Pruned(ctx, r.db, r.def.Name, slots)
	if err != nil || len(refused) == 0 {
		return err
	}
	what := fmt.Sprintf("the slot %s has", refused[0].In(r.loc).Format(time.RFC3339))
	if len(refused) > 1 {
		what = fmt.Sprintf("%d slots from %s to %s have", len(refused), refused[0].In(r.loc).Format(time.RFC3339), refused[len(refused)-1].In(r.loc).Format(time.RFC3339))
	}
	return usagef("job %s: %s no ledger row and its history through %s was pruned (historyRetention, --history-retention), so leasecron cannot tell whether they ran and does not run them again: %s",
		r.def.Name, what, horizon.In(r.loc).Format(time.RFC3339), fix(model.DateOf(horizon.In(r.loc)).AddDays(1)))
}

// prepare validates the job and flags, then opens and migrates the database.
func (o *manualOptions) prepare(cmd *cobra.Command, job, verb string, check func(def jobs.Definition) error) (*manualRun, error) {
	log, dsn, err := setup(cmd, &o.db, &o.log)
	if err != nil {
		return nil, err
	}
	if err := positive(map[string]time.Duration{"job-timeout": o.jobTimeout}); err != nil {
		return nil, err
	}
	o.jobs.defaults.Timeout = o.jobTimeout
	o.jobs.log = log
	set, err := o.jobs.load(dsn.Dialect)
	if err != nil {
		return nil, err
	}
	def, ok := set.find(job)
	if !ok {
		return nil, usagef("unknown job %q: known jobs are %s", job, set.names())
	}
	if err := check(def); err != nil {
		return nil, err
	}
	db, err := o.db.openMigrated(cmd.Context(), dsn, []jobs.Definition{def}, log)
	if err != nil {
		return nil, err
	}
	s, err := jobs.New(db, manualHolder(verb), []jobs.Definition{def}, jobs.Options{Log: log})
	if err != nil {
		_ = model.Close(db)
		return nil, err
	}
	return &manualRun{sched: s, db: db, def: def, loc: def.Schedule.Location(), close: func() { _ = model.Close(db) }}, nil
}

func newOnceCmd() *cobra.Command {
	o := &manualOptions{}
	var date string
	cmd := &cobra.Command{
		Use:   "once JOB",
		Short: "Run one slot of a job now, through the ledger (the most recent slot, or the first slot on --date)",
		Args:  exactlyOneJob,
		RunE: func(cmd *cobra.Command, args []string) error {
			job := args[0]
			var slot time.Time
			r, err := o.prepare(cmd, job, "once", func(def jobs.Definition) error {
				s, loc := def.Schedule, def.Schedule.Location()
				now := time.Now()
				if date == "" {
					slot = s.Prev(now)
					if slot.IsZero() {
						return usagef("job %s has no slot in the last five years", job)
					}
					return nil
				}
				d, err := parseDay("date", date)
				if err != nil {
					return err
				}
				slot = s.Next(d.In(loc).Add(-time.Nanosecond))
				if slot.IsZero() || model.DateOf(slot.In(loc)) != d {
					return usagef("job %s has no slot on %s with schedule %q", job, d, s)
				}
				if slot.After(now) {
					return usagef("the slot of %s on %s (%s) is in the future: give a date whose slot has passed", job, d, slot.In(loc).Format(time.RFC3339))
				}
				return nil
			})
			if err != nil {
				return err
			}
			defer r.close()
			if err := r.refusePruned(cmd.Context(), []time.Time{slot}, func(after model.Date) string {
				return fmt.Sprintf("give a --date from %s on", after)
			}); err != nil {
				return err
			}
			out, err := r.sched.RunSlot(cmd.Context(), jobs.Fence{}, job, slot, time.Now().Add(r.def.Policy.Timeout))
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", job, slot.In(r.loc).Format(time.RFC3339), out)
			if err != nil {
				return err
			}
			if out == jobs.Failed {
				return errReported
			}
			return nil
		},
	}
	o.addFlags(cmd)
	cmd.Flags().StringVar(&date, "date", "", "run the job's first slot on this date (YYYY-MM-DD, in --timezone) instead of its most recent one")
	return cmd
}

func exactlyOneJob(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("%s needs exactly one JOB argument, such as daily-stats (got %d)", cmd.Name(), len(args))
	}
	return nil
}

func newBackfillCmd() *cobra.Command {
	o := &manualOptions{}
	var from, to string
	cmd := &cobra.Command{
		Use:   "backfill JOB --from YYYY-MM-DD --to YYYY-MM-DD",
		Short: "Run every past slot of a job between two dates (inclusive), through the ledger",
		Args:  exactlyOneJob,
		RunE: func(cmd *cobra.Command, args []string) error {
			job := args[0]
			var slots []time.Time
			r, err := o.prepare(cmd, job, "backfill", func(def jobs.Definition) error {
				s, loc := def.Schedule, def.Schedule.Location()
				if from == "" || to == "" {
					return usagef("backfill needs --from and --to (YYYY-MM-DD)")
				}
				f, err := parseDay("from", from)
				if err != nil {
					return err
				}
				t, err := parseDay("to", to)
				if err != nil {
					return err
				}
				if t.Before(f) {
					return usagef("--to %s is before --from %s: swap them", t, f)
				}
				now := time.Now()
				end := t.AddDays(1).In(loc)
				for slot := s.Next(f.In(loc).Add(-time.Nanosecond)); !slot.IsZero() && slot.Before(end) && !slot.After(now); slot = s.Next(slot) {
					slots = append(slots, slot)
				}
				return nil
			})
			if err != nil {
				return err
			}
			defer r.close()
			if err := r.refusePruned(cmd.Context(), slots, func(after model.Date) string {
				return fmt.Sprintf("backfill from --from %s or later", after)
			}); err != nil {
				return err
			}
			if _, inTx := r.def.Work.(jobs.TxJob); !inTx {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d slots from %s to %s run outside the database (%s): one delivery per slot at least, each with its own Idempotency-Key\n",
					job, len(slots), from, to, r.def.Kind)
			}
			counts, err := r.sched.RunSlots(cmd.Context(), jobs.Fence{}, job, slots, time.Now().Add(r.def.Policy.Timeout))
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "backfill %s stopped: %v\n", job, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d slots from %s to %s: %d succeeded, %d already done, %d failed\n",
				job, len(slots), from, to, counts[jobs.Succeeded], counts[jobs.Skipped], counts[jobs.Failed])
			if counts[jobs.Failed] > 0 || cmd.Context().Err() != nil {
				return errReported
			}
			return nil
		},
	}
	o.addFlags(cmd)
	cmd.Flags().StringVar(&from, "from", "", "first date (YYYY-MM-DD, in --timezone)")
	cmd.Flags().StringVar(&to, "to", "", "last date, inclusive; slots still in the future are not run")
	return cmd
}

func newMigrateCmd() *cobra.Command {
	var (
		db dbOptions
		js jobsOptions
		lg logOptions
	)
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or adopt the ledger's tables and those of the jobs (run also does this at start-up)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, dsn, err := setup(cmd, &db, &lg)
			if err != nil {
				return err
			}
			set, err := js.load(dsn.Dialect)
			if err != nil {
				return err
			}
			gdb, err := db.openMigrated(cmd.Context(), dsn, set.defs, log)
			if err != nil {
				return err
			}
			defer model.Close(gdb)
			fmt.Fprintf(cmd.OutOrStdout(), "migrated %s\n", dsn)
			return nil
		},
	}
	db.addFlags(cmd.Flags())
	js.addFlags(cmd.Flags(), true)
	lg.addFlags(cmd.Flags())
	return cmd
}

func newDedupeCmd() *cobra.Command {
	var (
		db    dbOptions
		lg    logOptions
		apply bool
	)
	cmd := &cobra.Command{
		Use:   "dedupe",
		Short: "Merge duplicate dates in the statistics tables (a dry run unless --apply)",
		Long: `Find the dates that hold more than one row in a statistics table, as the
lock-file setup leasecron replaces left them, and keep one row per date: the
lowest id, with the counts of the removed rows added to it, so no count is
lost. Without --apply nothing is changed; with it every table is merged in
one transaction. Then 'leasecron migrate' can add the unique keys.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, dsn, err := setup(cmd, &db, &lg)
			if err != nil {
				return err
			}
			gdb, err := db.openExisting(cmd.Context(), dsn, log)
			if err != nil {
				return err
			}
			defer model.Close(gdb)
			reports, err := dailystats.Dedupe(cmd.Context(), gdb, apply)
			if err != nil {
				return fmt.Errorf("dedupe %s: %w", dsn, dsn.Scrub(err))
			}
			printDedupe(cmd.OutOrStdout(), reports, apply)
			return nil
		},
	}
	db.addFlags(cmd.Flags())
	lg.addFlags(cmd.Flags())
	cmd.Flags().BoolVar(&apply, "apply", false, "change the tables (default: only show what would change)")
	return cmd
}

// printDedupe prints one line per table, the first merges of each, and what
// to do next.
func printDedupe(w io.Writer, reports []dailystats.DedupeReport, applied bool) {
	const show = 5
	rows := 0
	for _, r := range reports {
		rows += r.Rows()
		if len(r.Merges) == 0 {
			fmt.Fprintf(w, "%s: no duplicate dates\n", r.Table)
			continue
		}
		verb := "to remove"
		if applied {
			verb = "removed"
		}
		fmt.Fprintf(w, "%s: %d dates with more than one row, %d rows %s\n", r.Table, len(r.Merges), r.Rows(), verb)
		for _, m := range r.Merges[:min(len(r.Merges), show)] {
			fmt.Fprintf(w, "  %s: keep id %d, count %s -> %s, remove ids %s\n", m.Date, m.Keep, countText(m.Before), countText(m.After), idsText(m.Remove))
		}
		if n := len(r.Merges); n > show {
			fmt.Fprintf(w, "  and %d more dates\n", n-show)
		}
	}
	switch {
	case rows == 0:
		fmt.Fprintln(w, "nothing to do")
	case applied:
		fmt.Fprintf(w, "merged: %d rows removed, their counts kept; run 'leasecron migrate' next\n", rows)
	default:
		fmt.Fprintln(w, "dry run: nothing changed; run 'leasecron dedupe --apply' to merge them")
	}
}

func countText(c *int64) string {
	if c == nil {
		return "NULL"
	}
	return strconv.FormatInt(*c, 10)
}

func idsText(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

func newVersionCmd() *cobra.Command {
	var out outputOptions
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version (-o json|yaml: also the Go version and platform)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), currentVersion(), func(w io.Writer) error {
				_, err := fmt.Fprintln(w, versionLine())
				return err
			})
		},
	}
	out.addFlags(cmd.Flags())
	return cmd
}
