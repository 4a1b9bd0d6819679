package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// verifyDoc is `leasecron verify -o json|yaml`: what was checked, and every
// problem found (printed also when verify exits 1 for them).
type verifyDoc struct {
	Jobs     []verifiedJob `json:"jobs"`
	Findings []finding     `json:"findings"`
}

// verifiedJob is what verify checked for one job.
type verifiedJob struct {
	Name string `json:"name"`
	// From and To bound the slots checked; both are absent when the job has
	// no ledger row yet and no --from was given: nothing was checked.
	From *time.Time `json:"from,omitempty"`
	To   *time.Time `json:"to,omitempty"`
	// PrunedThrough is the job's horizon, if its history was pruned: the
	// check starts after it, since a pruned slot has no row to show.
	PrunedThrough *time.Time `json:"prunedThrough,omitempty"`
	// Tables is the check of the statistics tables, for a dailyStats job.
	Tables *verifiedTables `json:"tables,omitempty"`
}

// verifiedTables is the range of dates checked in the statistics tables;
// From and To are absent when no table holds a date yet and no range was
// given (nothing was checked).
type verifiedTables struct {
	From  string   `json:"from,omitempty"`
	To    string   `json:"to,omitempty"`
	Names []string `json:"names"`
}

// Kinds of finding.
const (
	findingSlot      = "slotNotSucceeded" // Slot of Job has no succeeded ledger row
	findingDuplicate = "duplicateDate"    // Table holds Rows rows for Date
	findingMissing   = "missingDate"      // Table holds no row for Date
)

// finding is one problem verify found.
type finding struct {
	Kind  string     `json:"kind"`
	Job   string     `json:"job"`
	Slot  *time.Time `json:"slot,omitempty"`
	Table string     `json:"table,omitempty"`
	Date  string     `json:"date,omitempty"`
	Rows  int64      `json:"rows,omitempty"`
}

// dayRange is --from and --to; a bound not given is the zero Date.
type dayRange struct{ from, to model.Date }

// jobCheck is what verify checked and found for one job.
type jobCheck struct {
	def jobs.Definition
	// checked is false when the job has no ledger row and no --from
	// was given: nothing to check.
	checked    bool
	start, end time.Time
	// pruned is the job's horizon (zero: never pruned); start is after it.
	pruned  time.Time
	missing []time.Time
	// stats is the check of the statistics tables, for a dailyStats job.
	stats *statsCheck
}

// statsCheck is what verify checked and found in the statistics tables.
type statsCheck struct {
	checked  bool
	from, to model.Date
	reports  []dailystats.TableReport
}

func newVerifyCmd() *cobra.Command {
	var (
		db       dbOptions
		js       jobsOptions
		lg       logOptions
		out      outputOptions
		from, to string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check every job's slots in the ledger and the statistics tables (exit 1 if anything is missing or doubled, 3 if it cannot check)",
		Long: `For every job, list the slots between --from and --to that have no succeeded row
in the ledger (default: from the job's first ledger row to now). For the
daily-stats job, also check the statistics tables for dates with more than one
row and for dates with no row (default range: the earliest and latest dates any
table holds). Exits 1 when it finds any, and 3 when it cannot check (the
database is unreachable, the ledger is missing).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			log, dsn, err := setup(cmd, &db, &lg)
			if err != nil {
				return err
			}
			set, err := js.load(dsn.Dialect)
			if err != nil {
				return notChecked(err)
			}
			var r dayRange
			if from != "" {
				if r.from, err = parseDay("from", from); err != nil {
					return err
				}
			}
			if to != "" {
				if r.to, err = parseDay("to", to); err != nil {
					return err
				}
			}
			if from != "" && to != "" && r.to.Before(r.from) {
				return usagef("--to %s is before --from %s: swap them", r.to, r.from)
			}
			gdb, err := db.openExisting(cmd.Context(), dsn, log)
			if err != nil {
				return notChecked(err)
			}
			defer model.Close(gdb)
			var checks []jobCheck
			for _, d := range set.defs {
				c, err := checkJob(cmd.Context(), gdb, d, r)
				if err != nil {
					return notChecked(fmt.Errorf("verify %s in %s: %w (has 'leasecron migrate' run?)", d.Name, dsn, dsn.Scrub(err)))
				}
				if _, stats := d.Work.(dailystats.Job); stats {
					if c.stats, err = checkStats(cmd.Context(), gdb, r); err != nil {
						return notChecked(fmt.Errorf("verify %s: %w (has 'leasecron migrate' run?)", dsn, dsn.Scrub(err)))
					}
				}
				checks = append(checks, c)
			}
			doc := verifyDocOf(checks)
			if err := out.print(cmd.OutOrStdout(), doc, func(w io.Writer) error {
				printChecks(w, checks, len(doc.Findings) == 0)
				return nil
			}); err != nil {
				// Exit 1 would claim findings the caller never saw.
				return notChecked(fmt.Errorf("print the report: %w", err))
			}
			if len(doc.Findings) > 0 {
				return errReported
			}
			return nil
		},
	}
	db.addFlags(cmd.Flags())
	js.addFlags(cmd.Flags(), true)
	lg.addFlags(cmd.Flags())
	out.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&from, "from", "", "first date of the range to check (YYYY-MM-DD, in the job's zone; default: the job's first slot in the ledger, and for the tables the earliest date held)")
	cmd.Flags().StringVar(&to, "to", "", "last date of the range, inclusive (default: now, and for the tables the latest date held)")
	return cmd
}

// notChecked marks a runtime failure as one that kept verify from checking
// (exit 3); bad usage stays bad usage (exit 2).
func notChecked(err error) error {
	if errors.As(err, new(usageError)) {
		return err
	}
	return notCheckedError{err}
}

// checkJob finds the slots of d in the range that have no succeeded row.
func checkJob(ctx context.Context, db *gorm.DB, d jobs.Definition, r dayRange) (jobCheck, error) {
	loc := d.Schedule.Location()
	c := jobCheck{def: d, checked: true, start: r.from.In(loc), end: r.to.AddDays(1).In(loc).Add(-time.Nanosecond)}
	if r.from.IsZero() {
		first, ok, err := jobs.FirstSlot(ctx, db, d.Name)
		if err != nil {
			return c, err
		}
		if !ok {
			c.checked = false
			return c, nil
		}
		c.start = first
	}
	if now := time.Now(); r.to.IsZero() || c.end.After(now) {
		c.end = now
	}
	h, pruned, err := jobs.Horizon(ctx, db, d.Name)
	if err != nil {
		return c, err
	}
	if pruned {
		c.pruned = h.PrunedThrough
		if !c.start.After(c.pruned) {
			c.start = c.pruned.Truncate(time.Second).Add(time.Second) // the first whole second after: a schedule slot is one
		}
	}
	c.missing, err = jobs.Unsucceeded(ctx, db, d, c.start, c.end)
	return c, err
}

// checkStats checks the four statistics tables, as verify always has.
func checkStats(ctx context.Context, db *gorm.DB, r dayRange) (*statsCheck, error) {
	first, last, any, err := dailystats.DateSpan(ctx, db)
	if err != nil {
		return nil, err
	}
	c := &statsCheck{from: r.from, to: r.to}
	if r.from.IsZero() {
		c.from = first
	}
	if r.to.IsZero() {
		c.to = last
	}
	if !any && (r.from.IsZero() || r.to.IsZero()) {
		return c, nil
	}
	c.checked = true
	c.reports, err = dailystats.Verify(ctx, db, c.from, c.to)
	return c, err
}

// verifyDocOf is the document of checks.
func verifyDocOf(checks []jobCheck) verifyDoc {
	doc := verifyDoc{Jobs: []verifiedJob{}, Findings: []finding{}}
	for _, c := range checks {
		name := c.def.Name
		vj := verifiedJob{Name: name}
		if c.checked {
			vj.From, vj.To = utc(c.start), utc(c.end)
		}
		if !c.pruned.IsZero() {
			vj.PrunedThrough = utc(c.pruned)
		}
		for _, m := range c.missing {
			doc.Findings = append(doc.Findings, finding{Kind: findingSlot, Job: name, Slot: utc(m)})
		}
		if s := c.stats; s != nil {
			vj.Tables = &verifiedTables{Names: []string{}}
			if s.checked {
				vj.Tables.From, vj.Tables.To = s.from.String(), s.to.String()
			}
			for _, r := range s.reports {
				vj.Tables.Names = append(vj.Tables.Names, r.Table)
				for _, d := range r.Duplicates {
					doc.Findings = append(doc.Findings, finding{Kind: findingDuplicate, Job: name, Table: r.Table, Date: d.Date.String(), Rows: d.Count})
				}
				for _, d := range r.Missing {
					doc.Findings = append(doc.Findings, finding{Kind: findingMissing, Job: name, Table: r.Table, Date: d.String()})
				}
			}
		}
		doc.Jobs = append(doc.Jobs, vj)
	}
	return doc
}

// printChecks prints the table form: one line per job, the tables' lines
// after a dailyStats job's, and a last line if all passed.
func printChecks(w io.Writer, checks []jobCheck, ok bool) {
	for _, c := range checks {
		printJobCheck(w, c)
		if s := c.stats; s != nil {
			if !s.checked {
				fmt.Fprintln(w, "no dates in any statistics table yet; give --from and --to to check a range")
			} else {
				printVerify(w, s.reports, s.from, s.to)
			}
		}
	}
	if ok {
		fmt.Fprintln(w, "all checks passed")
	}
}

// printJobCheck prints a job's line: ok, or its first slots without a
// succeeded run.
func printJobCheck(w io.Writer, c jobCheck) {
	name, loc := c.def.Name, c.def.Schedule.Location()
	if !c.checked {
		fmt.Fprintf(w, "job %s: no slots in the ledger yet\n", name)
		return
	}
	span := fmt.Sprintf("%s to %s", c.start.In(loc).Format(time.RFC3339), c.end.In(loc).Format(time.RFC3339))
	if !c.pruned.IsZero() {
		span += fmt.Sprintf(" (history through %s pruned)", c.pruned.In(loc).Format(time.RFC3339))
	}
	if len(c.missing) == 0 {
		fmt.Fprintf(w, "job %s: ok (every slot from %s succeeded)\n", name, span)
		return
	}
	const show = 10
	var ts []string
	for _, m := range c.missing[:min(len(c.missing), show)] {
		ts = append(ts, m.In(loc).Format(time.RFC3339))
	}
	fmt.Fprintf(w, "job %s: %d slots from %s without a succeeded run: %s%s\n", name, len(c.missing), span, strings.Join(ts, ", "), more(len(c.missing), show))
}

// printVerify prints one line per table.
func printVerify(w io.Writer, reports []dailystats.TableReport, from, to model.Date) {
	const show = 10
	fmt.Fprintf(w, "checking %s to %s\n", from, to)
	for _, r := range reports {
		if r.OK() {
			fmt.Fprintf(w, "%s: ok\n", r.Table)
			continue
		}
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
}

func more(n, shown int) string {
	if n > shown {
		return fmt.Sprintf(" and %d more", n-shown)
	}
	return ""
}
