// Package cli is leasecron's command line: one cobra command per verb, option
// groups shared between them, and the exit-code policy.
//
// Every flag can also come from the environment as LEASECRON_<FLAG> (upper
// case, dashes to underscores); a flag on the command line wins. Bad usage or
// configuration is detected before anything is opened or written and ends
// with one line on stderr and exit code 2; runtime failures exit 1. verify,
// a check scripts act on, keeps 1 for what it found and exits 3 when it
// could not check at all.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"k8s.io/klog/v2"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
	// ExitNotChecked is verify's code when it could not check (database
	// unreachable, ledger missing); 1 means it checked and found problems.
	ExitNotChecked = 3
)

// usageError marks an error as bad usage or configuration (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// notCheckedError marks a failure that kept verify from checking (exit 3).
type notCheckedError struct{ err error }

func (e notCheckedError) Error() string { return e.err.Error() }
func (e notCheckedError) Unwrap() error { return e.err }

// errReported is a runtime failure whose message was already printed (exit 1).
var errReported = errors.New("reported")

// Execute runs the command line args and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, errReported) {
		return ExitFailure
	}
	var ue usageError
	if errors.As(err, &ue) {
		// One line per problem (a jobs file can have several).
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "leasecron: %s\n", line)
		}
		return ExitUsage
	}
	code := ExitFailure
	if errors.As(err, new(notCheckedError)) {
		code = ExitNotChecked
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if strings.HasPrefix(msg, "unknown command") {
		code = ExitUsage
		msg += ": run 'leasecron --help' for the commands"
	}
	fmt.Fprintf(stderr, "leasecron: %s\n", msg)
	return code
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "leasecron",
		Short: "Leader-elected cron: scheduled jobs run exactly once per slot across replicas",
		Long: `leasecron runs scheduled jobs exactly once per slot, however many copies of it run.
Replicas compete for a Kubernetes Lease (or, on one host, a file lock); only the
leader schedules, and a ledger in the database guards every slot.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version prints what the version command prints.
		Version: versionLine(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usagef("%v: run 'leasecron <command> --help' for the flags", err)
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return applyEnv(cmd.Flags())
	}
	root.AddCommand(newRunCmd(), newOnceCmd(), newBackfillCmd(), newStatusCmd(), newVerifyCmd(), newMigrateCmd(), newDedupeCmd(), newJobsCmd(), newValidateCmd(), newVersionCmd())
	return root
}

// envName is the environment variable for a flag.
func envName(flag string) string {
	return "LEASECRON_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its
// LEASECRON_* variable. Repeatable flags take several values separated by
// newlines or semicolons.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		values := []string{v}
		if f.Value.Type() == "stringArray" {
			values = strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == '\n' })
		}
		for _, one := range values {
			if serr := fs.Set(f.Name, strings.TrimSpace(one)); serr != nil {
				err = usagef("environment variable %s is not valid for --%s: %v", envName(f.Name), f.Name, serr)
				return
			}
		}
	})
	return err
}

// logOptions configure logging.
type logOptions struct {
	format string
	level  string
}

func (o *logOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.format, "log-format", "", "log format: json or text (default: text on a terminal, json otherwise)")
	fs.StringVar(&o.level, "log-level", "info", "log level: debug, info, warn or error")
}

// replaceAttr keeps one form per concept in every log line, whoever logs it:
// a duration is its readable String() form ("2.563ms", "1m0s"), not
// nanoseconds; a slot ("slot") is an RFC 3339 string in UTC, whether it was
// logged as a time.Time or already formatted in the job's zone.
func replaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch {
	case a.Value.Kind() == slog.KindDuration:
		return slog.String(a.Key, a.Value.Duration().String())
	case a.Key == "slot" && a.Value.Kind() == slog.KindTime:
		return slog.String(a.Key, a.Value.Time().UTC().Format(time.RFC3339))
	case a.Key == "slot" && a.Value.Kind() == slog.KindString:
		if t, err := time.Parse(time.RFC3339, a.Value.String()); err == nil {
			return slog.String(a.Key, t.UTC().Format(time.RFC3339))
		}
	}
	return a
}

// logger builds the process logger and routes client-go's klog into it.
func (o *logOptions) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.level)); err != nil {
		return nil, usagef("--log-level %q is not valid: use debug, info, warn or error", o.level)
	}
	format := o.format
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	hopts := &slog.HandlerOptions{Level: level, ReplaceAttr: replaceAttr}
	var h slog.Handler
	switch format {
	case "json":
		h = slog.NewJSONHandler(w, hopts)
	case "text":
		h = slog.NewTextHandler(w, hopts)
	default:
		return nil, usagef("--log-format %q is not valid: use json or text", o.format)
	}
	log := slog.New(h)
	// klog and the MySQL driver's logger are process-global by design;
	// pointing them at our handler are the global writes leasecron makes,
	// once, at start-up, so that every line is in the chosen format.
	klog.SetSlogLogger(log.With("source", "client-go"))
	_ = mysql.SetLogger(driverLog{log.With("source", "mysql")}) // fails only for nil
	return log, nil
}

// driverLog passes the MySQL driver's messages ("closing bad idle
// connection: EOF") on as warnings.
type driverLog struct{ log *slog.Logger }

func (d driverLog) Print(v ...any) { d.log.Warn(strings.TrimSpace(fmt.Sprint(v...))) }
