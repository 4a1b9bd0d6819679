package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/leasecron/leasecron/internal/version"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// manualOptions are shared by once and backfill.
type manualOptions struct {
	db         dbOptions
	sched      scheduleOptions
	log        logOptions
	jobTimeout time.Duration
}

func (o *manualOptions) addFlags(cmd *cobra.Command) {
	o.db.addFlags(cmd.Flags())
	o.sched.addFlags(cmd.Flags(), true)
	o.log.addFlags(cmd.Flags())
	cmd.Flags().DurationVar(&o.jobTimeout, "job-timeout", 10*time.Minute, "time limit of one attempt of a slot; failed attempts are retried until it passes")
}

// manualRun is what once and backfill share once their input is valid.
type manualRun struct {
	sched *jobs.Scheduler
	loc   *time.Location
	sch   *jobs.Schedule
	close func()
}

// prepare validates the job and flags, then opens and migrates the database.
func (o *manualOptions) prepare(cmd *cobra.Command, job, verb string, check func(*jobs.Schedule, *time.Location) error) (*manualRun, error) {
	log, dsn, err := setup(cmd, &o.db, &o.log)
	if err != nil {
		return nil, err
	}
	loc, reg, scheds, err := o.sched.resolve()
	if err != nil {
		return nil, err
	}
	if reg[job] == nil {
		return nil, usagef("unknown job %q: known jobs are %s", job, strings.Join(reg.Names(), ", "))
	}
	if err := positive(map[string]time.Duration{"job-timeout": o.jobTimeout}); err != nil {
		return nil, err
	}
	if err := check(scheds[job], loc); err != nil {
		return nil, err
	}
	db, err := o.db.open(cmd.Context(), dsn, true, log)
	if err != nil {
		return nil, err
	}
	s, err := jobs.New(db, manualHolder(verb), jobs.Options{Jobs: reg, Schedules: scheds, JobTimeout: o.jobTimeout, Log: log})
	if err != nil {
		_ = model.Close(db)
		return nil, err
	}
	return &manualRun{sched: s, loc: loc, sch: scheds[job], close: func() { _ = model.Close(db) }}, nil
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
			r, err := o.prepare(cmd, job, "once", func(s *jobs.Schedule, loc *time.Location) error {
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
			out, err := r.sched.RunSlot(cmd.Context(), jobs.Fence{}, job, slot, time.Now().Add(o.jobTimeout))
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
			r, err := o.prepare(cmd, job, "backfill", func(s *jobs.Schedule, loc *time.Location) error {
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
			counts, err := r.sched.RunSlots(cmd.Context(), jobs.Fence{}, job, slots, time.Now().Add(o.jobTimeout))
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

func newStatusCmd() *cobra.Command {
	var (
		db    dbOptions
		sched scheduleOptions
		lg    logOptions
		limit int
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show who leads, the recent runs and the next slots",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, dsn, err := setup(cmd, &db, &lg)
			if err != nil {
				return err
			}
			loc, reg, scheds, err := sched.resolve()
			if err != nil {
				return err
			}
			if limit < 1 {
				return usagef("--limit must be at least 1 (got %d)", limit)
			}
			gdb, err := db.openExisting(cmd.Context(), dsn, log)
			if err != nil {
				return err
			}
			defer model.Close(gdb)
			st, err := model.ReadStatus(cmd.Context(), gdb, limit)
			if err != nil {
				return fmt.Errorf("read status from %s: %w (has 'leasecron migrate' run?)", dsn, dsn.Scrub(err))
			}
			printStatus(cmd.OutOrStdout(), st, reg, scheds, loc)
			return nil
		},
	}
	db.addFlags(cmd.Flags())
	sched.addFlags(cmd.Flags(), true)
	lg.addFlags(cmd.Flags())
	cmd.Flags().IntVar(&limit, "limit", 10, "how many recent runs to show")
	return cmd
}

func printStatus(w io.Writer, st model.Status, reg jobs.Registry, scheds map[string]*jobs.Schedule, loc *time.Location) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "LEADERSHIP")
	if len(st.Terms) == 0 {
		fmt.Fprintln(tw, "  no leader has started yet")
	}
	for _, t := range st.Terms {
		since := "-"
		if t.StartedAt != nil {
			since = t.StartedAt.In(loc).Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\tholder %s\tterm %d\tsince %s\n", t.Scope, t.Holder, t.Term, since)
	}
	fmt.Fprintln(tw, "\nJOBS")
	now := time.Now()
	for _, name := range reg.Names() {
		s := scheds[name]
		var next []string
		for t, i := now, 0; i < 3; i++ {
			t = s.Next(t)
			if t.IsZero() {
				break
			}
			next = append(next, t.In(loc).Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "  %s\tschedule %q\tnext %s\n", name, s.String(), strings.Join(next, ", "))
	}
	fmt.Fprintln(tw, "\nRECENT RUNS")
	fmt.Fprintln(tw, "  JOB\tSLOT\tSTATUS\tHOLDER\tFENCE\tATTEMPTS\tERROR")
	for _, r := range st.Runs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Job, r.Slot.In(loc).Format(time.RFC3339), r.Status, r.Holder, r.Fence, r.Attempts, r.Error)
	}
}

func newVerifyCmd() *cobra.Command {
	var (
		db       dbOptions
		sched    scheduleOptions
		lg       logOptions
		from, to string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the statistics tables: duplicate dates, and dates missing in a range (exit 1 if any)",
		Long: `Check every statistics table for dates with more than one row and for dates
with no row between --from and --to (default: the earliest and latest dates any
table holds). Exits 1 when it finds either.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, dsn, err := setup(cmd, &db, &lg)
			if err != nil {
				return err
			}
			if _, err := sched.location(); err != nil {
				return err
			}
			var f, t model.Date
			if from != "" {
				if f, err = parseDay("from", from); err != nil {
					return err
				}
			}
			if to != "" {
				if t, err = parseDay("to", to); err != nil {
					return err
				}
			}
			if from != "" && to != "" && t.Before(f) {
				return usagef("--to %s is before --from %s: swap them", t, f)
			}
			gdb, err := db.openExisting(cmd.Context(), dsn, log)
			if err != nil {
				return err
			}
			defer model.Close(gdb)
			first, last, any, err := model.DateSpan(cmd.Context(), gdb)
			if err != nil {
				return fmt.Errorf("verify %s: %w (has 'leasecron migrate' run?)", dsn, dsn.Scrub(err))
			}
			if from == "" {
				f = first
			}
			if to == "" {
				t = last
			}
			if !any && (from == "" || to == "") {
				fmt.Fprintln(cmd.OutOrStdout(), "no dates in any statistics table yet; give --from and --to to check a range")
				return nil
			}
			reports, err := model.Verify(cmd.Context(), gdb, f, t)
			if err != nil {
				return fmt.Errorf("verify %s: %w", dsn, dsn.Scrub(err))
			}
			if !printVerify(cmd.OutOrStdout(), reports, f, t) {
				return errReported
			}
			return nil
		},
	}
	db.addFlags(cmd.Flags())
	sched.addFlags(cmd.Flags(), false)
	lg.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&from, "from", "", "first date of the range to check for gaps (default: the earliest date held)")
	cmd.Flags().StringVar(&to, "to", "", "last date of the range, inclusive (default: the latest date held)")
	return cmd
}

// printVerify prints one line per table and reports whether all are clean.
func printVerify(w io.Writer, reports []model.TableReport, from, to model.Date) bool {
	const show = 10
	ok := true
	fmt.Fprintf(w, "checking %s to %s\n", from, to)
	for _, r := range reports {
		if r.OK() {
			fmt.Fprintf(w, "%s: ok\n", r.Table)
			continue
		}
		ok = false
		var parts []string
		if n := len(r.Duplicates); n > 0 {
			var ds []string
			for _, d := range r.Duplicates[:min(n, show)] {
				ds = append(ds, fmt.Sprintf("%s (%d rows)", d.Date, d.Count))
			}
			parts = append(parts, fmt.Sprintf("%d duplicate dates: %s%s", n, strings.Join(ds, ", "), more(n, show)))
		}
		if n := len(r.Missing); n > 0 {
			var ds []string
			for _, d := range r.Missing[:min(n, show)] {
				ds = append(ds, d.String())
			}
			parts = append(parts, fmt.Sprintf("%d missing dates: %s%s", n, strings.Join(ds, ", "), more(n, show)))
		}
		fmt.Fprintf(w, "%s: %s\n", r.Table, strings.Join(parts, "; "))
	}
	return ok
}

func more(n, shown int) string {
	if n > shown {
		return fmt.Sprintf(" and %d more", n-shown)
	}
	return ""
}

func newMigrateCmd() *cobra.Command {
	var (
		db dbOptions
		lg logOptions
	)
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or adopt the database tables (run also does this at start-up)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, dsn, err := setup(cmd, &db, &lg)
			if err != nil {
				return err
			}
			gdb, err := db.open(cmd.Context(), dsn, true, log)
			if err != nil {
				return err
			}
			defer model.Close(gdb)
			fmt.Fprintf(cmd.OutOrStdout(), "migrated %s\n", dsn)
			return nil
		},
	}
	db.addFlags(cmd.Flags())
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
			reports, err := model.Dedupe(cmd.Context(), gdb, apply)
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
func printDedupe(w io.Writer, reports []model.DedupeReport, applied bool) {
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
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "leasecron %s (commit %s)\n", version.Version, version.Commit)
		},
	}
}
