package cli

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// jobsDoc is `leasecron jobs -o json|yaml`.
type jobsDoc struct {
	Jobs []jobInfo `json:"jobs"`
}

// jobInfo is one job as `jobs` (and, with its last success, `status`)
// prints it.
type jobInfo struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Schedule string `json:"schedule"`
	TimeZone string `json:"timeZone"`
	Suspend  bool   `json:"suspend"`
	// Timeout is the time limit of one attempt, such as "10m0s".
	Timeout   string      `json:"timeout"`
	NextSlots []time.Time `json:"nextSlots"`
	// zone is the job's zone, in which the table shows its slots.
	zone *time.Location
}

// newJobInfo describes d with its next n slots after now.
func newJobInfo(d jobs.Definition, now time.Time, n int) jobInfo {
	loc := d.Schedule.Location()
	in := jobInfo{Name: d.Name, Kind: d.Kind, Schedule: d.Schedule.String(), TimeZone: loc.String(),
		Suspend: d.Policy.Suspend, Timeout: d.Policy.Timeout.String(), NextSlots: []time.Time{}, zone: loc}
	for _, t := range nextSlots(d.Schedule, now, n) {
		in.NextSlots = append(in.NextSlots, t.UTC())
	}
	return in
}

func newJobsCmd() *cobra.Command {
	var (
		js   jobsOptions
		dsn  string
		out  outputOptions
		next int
	)
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List the jobs the flags and --jobs-file define: kind, schedule, zone and next slots (no database needed)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if next < 0 {
				return usagef("--next must be 0 or more (got %d)", next)
			}
			dialect, err := dialectOf(dsn)
			if err != nil {
				return err
			}
			// What the listing leaves out (--jobs-source cluster) is said on stderr.
			js.log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			set, err := js.load(dialect)
			if err != nil {
				return err
			}
			now := time.Now()
			doc := jobsDoc{Jobs: make([]jobInfo, 0, len(set.defs))}
			for _, d := range set.defs {
				doc.Jobs = append(doc.Jobs, newJobInfo(d, now, next))
			}
			return out.print(cmd.OutOrStdout(), doc, func(w io.Writer) error { return printJobs(w, doc.Jobs) })
		},
	}
	js.addFlags(cmd.Flags(), true)
	cmd.Flags().StringVar(&dsn, "database-dsn", model.DefaultDSN, "the ledger's DSN: only its scheme is read (sql jobs are checked for its dialect); nothing is opened")
	out.addFlags(cmd.Flags())
	cmd.Flags().IntVar(&next, "next", 3, "how many next slots to show per job")
	return cmd
}

func printJobs(w io.Writer, infos []jobInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSCHEDULE\tZONE\tSUSPEND\tNEXT")
	for _, in := range infos {
		next := make([]string, len(in.NextSlots))
		for i, t := range in.NextSlots {
			next[i] = t.In(in.zone).Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", in.Name, in.Kind, in.Schedule, in.TimeZone, in.Suspend, strings.Join(next, ", "))
	}
	return tw.Flush()
}

// dialectOf reads the dialect of a DSN without opening anything.
func dialectOf(raw string) (string, error) {
	d, err := model.ParseDSN(raw)
	if err != nil {
		return "", usageError{err}
	}
	return d.Dialect, nil
}

func newValidateCmd() *cobra.Command {
	var (
		js  jobsOptions
		dsn string
	)
	cmd := &cobra.Command{
		Use:   "validate --jobs-file FILE",
		Short: "Check a jobs file without any database, for CI pipelines: exit 2 with one line per problem",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if js.jobsFile == "" {
				return usagef("validate needs --jobs-file FILE")
			}
			dialect, err := dialectOf(dsn)
			if err != nil {
				return err
			}
			set, err := js.load(dialect)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d jobs ok: %s\n", js.jobsFile, len(set.defs), set.names())
			return nil
		},
	}
	cmd.Flags().StringVar(&js.jobsFile, "jobs-file", "", "the jobs file to check")
	cmd.Flags().StringVar(&js.timezone, "timezone", "", "the zone of jobs that name none (default: the local zone)")
	js.addAllowCommands(cmd.Flags())
	cmd.Flags().StringVar(&dsn, "database-dsn", model.DefaultDSN, "the ledger's DSN: only its scheme is read, so sql statements are checked for its dialect; nothing is opened")
	return cmd
}
