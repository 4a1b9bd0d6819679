package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// statusDoc is `leasecron status -o json|yaml`. It names no database: the
// caller knows which one it asked, and the DSN may hold a password.
type statusDoc struct {
	// Leadership is the current term of every election scope.
	Leadership []leaderInfo `json:"leadership"`
	Jobs       []jobStatus  `json:"jobs"`
	// RecentRuns are the --limit latest ledger rows, newest slot first.
	RecentRuns []runInfo `json:"recentRuns"`
}

// leaderInfo is one election scope's current term.
type leaderInfo struct {
	Scope     string     `json:"scope"`
	Holder    string     `json:"holder"`
	Term      int64      `json:"term"`
	StartedAt *time.Time `json:"startedAt,omitempty"`
}

// jobStatus is a job as `jobs` lists it, with its latest succeeded slot in
// the ledger (absent when none has succeeded).
type jobStatus struct {
	jobInfo
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
}

// runInfo is one ledger row.
type runInfo struct {
	Job        string     `json:"job"`
	Slot       time.Time  `json:"slot"`
	Status     string     `json:"status"`
	Holder     string     `json:"holder"`
	Fence      int64      `json:"fence"`
	Attempts   int        `json:"attempts"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	Error      string     `json:"error,omitempty"`
}

func newStatusCmd() *cobra.Command {
	var (
		db    dbOptions
		js    jobsOptions
		lg    logOptions
		out   outputOptions
		limit int
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show who leads, the jobs with their next slots, and the recent runs",
		Args:  noArgs,
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
			st, err := jobs.ReadStatus(cmd.Context(), gdb, limit)
			if err != nil {
				return fmt.Errorf("read status from %s: %w (has 'leasecron migrate' run?)", dsn, dsn.Scrub(err))
			}
			if !out.document() {
				printStatus(cmd.OutOrStdout(), st, set)
				return nil
			}
			doc := statusDoc{Leadership: []leaderInfo{}, Jobs: []jobStatus{}, RecentRuns: []runInfo{}}
			for _, t := range st.Terms {
				doc.Leadership = append(doc.Leadership, leaderInfo{Scope: t.Scope, Holder: t.Holder, Term: t.Term, StartedAt: utcOrNil(t.StartedAt)})
			}
			now, ledger := time.Now(), jobs.NewLedger(gdb, "")
			for _, d := range set.defs {
				row := jobStatus{jobInfo: newJobInfo(d, now, 3)}
				last, _, err := ledger.LastSucceeded(cmd.Context(), d.Name)
				if err != nil {
					return fmt.Errorf("read status from %s: %w", dsn, dsn.Scrub(err))
				}
				if !last.IsZero() {
					row.LastSuccess = utc(last)
				}
				doc.Jobs = append(doc.Jobs, row)
			}
			for _, r := range st.Runs {
				doc.RecentRuns = append(doc.RecentRuns, runInfo{Job: r.Job, Slot: r.Slot.UTC(), Status: r.Status, Holder: r.Holder, Fence: r.Fence,
					Attempts: r.Attempts, StartedAt: utcOrNil(r.StartedAt), FinishedAt: utcOrNil(r.FinishedAt), Error: r.Error})
			}
			return out.encode(cmd.OutOrStdout(), doc)
		},
	}
	db.addFlags(cmd.Flags())
	js.addFlags(cmd.Flags(), true)
	lg.addFlags(cmd.Flags())
	out.addFlags(cmd.Flags())
	cmd.Flags().IntVar(&limit, "limit", 10, "how many recent runs to show")
	return cmd
}

// nextSlots returns up to n slots of s after t.
func nextSlots(s *jobs.Schedule, t time.Time, n int) []time.Time {
	var out []time.Time
	for i := 0; i < n; i++ {
		if t = s.Next(t); t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

func printStatus(w io.Writer, st jobs.Status, set *jobSet) {
	loc := set.loc
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
	for _, d := range set.defs {
		var next []string
		for _, t := range nextSlots(d.Schedule, now, 3) {
			next = append(next, t.In(d.Schedule.Location()).Format(time.RFC3339))
		}
		suspended := ""
		if d.Policy.Suspend {
			suspended = "\tsuspended"
		}
		fmt.Fprintf(tw, "  %s\t%s\tschedule %q\tnext %s%s\n", d.Name, d.Kind, d.Schedule.String(), strings.Join(next, ", "), suspended)
	}
	fmt.Fprintln(tw, "\nRECENT RUNS")
	fmt.Fprintln(tw, "  JOB\tSLOT\tSTATUS\tHOLDER\tFENCE\tATTEMPTS\tERROR")
	for _, r := range st.Runs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Job, r.Slot.In(loc).Format(time.RFC3339), r.Status, r.Holder, r.Fence, r.Attempts, r.Error)
	}
}
