package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/leasecron/leasecron/pkg/model"
)

// jobInfo is one job as `leasecron jobs -o json|yaml` prints it.
type jobInfo struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Schedule  string   `json:"schedule"`
	TimeZone  string   `json:"timeZone"`
	Suspend   bool     `json:"suspend"`
	Timeout   string   `json:"timeout"`
	NextSlots []string `json:"nextSlots"`
}

func newJobsCmd() *cobra.Command {
	var (
		js     jobsOptions
		dsn    string
		output string
		next   int
	)
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List the jobs the flags and --jobs-file define: kind, schedule, zone and next slots (no database needed)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" && output != "yaml" {
				return usagef("-o %q is not valid: use json or yaml, or leave it out for a table", output)
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
			infos := make([]jobInfo, 0, len(set.defs))
			for _, d := range set.defs {
				loc := d.Schedule.Location()
				in := jobInfo{Name: d.Name, Kind: d.Kind, Schedule: d.Schedule.String(), TimeZone: loc.String(),
					Suspend: d.Policy.Suspend, Timeout: d.Policy.Timeout.String(), NextSlots: []string{}}
				for _, t := range nextSlots(d.Schedule, now, next) {
					in.NextSlots = append(in.NextSlots, t.In(loc).Format(time.RFC3339))
				}
				infos = append(infos, in)
			}
			return printJobs(cmd.OutOrStdout(), infos, output)
		},
	}
	js.addFlags(cmd.Flags(), true)
	cmd.Flags().StringVar(&dsn, "database-dsn", model.DefaultDSN, "the ledger's DSN: only its scheme is read (sql jobs are checked for its dialect); nothing is opened")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml (default: a table)")
	cmd.Flags().IntVar(&next, "next", 3, "how many next slots to show per job")
	return cmd
}

func printJobs(w io.Writer, infos []jobInfo, output string) error {
	switch output {
	case "json":
		b, err := json.MarshalIndent(infos, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(infos)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSCHEDULE\tZONE\tSUSPEND\tNEXT")
	for _, in := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", in.Name, in.Kind, in.Schedule, in.TimeZone, in.Suspend, strings.Join(in.NextSlots, ", "))
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
