package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// dbOptions say where the database is.
type dbOptions struct {
	dsn            string
	dsnFile        string
	caFile         string
	connectTimeout time.Duration
	// limits are set on every session; run sets them, other commands none.
	limits model.SessionLimits
	// maxConns bounds the pool (0: model.DefaultMaxConns).
	maxConns int
}

func (o *dbOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.dsn, "database-dsn", model.DefaultDSN, "database DSN: sqlite://PATH, mysql://USER:PASS@HOST:PORT/DB or postgres://USER:PASS@HOST:PORT/DB")
	fs.StringVar(&o.dsnFile, "database-dsn-file", "", "read the database DSN from this file (a mounted Secret) instead, and again for every new connection, so a rotated Secret is picked up; giving it with --database-dsn is refused")
	fs.StringVar(&o.caFile, "database-ca-file", "", "PEM file of the CA that signed the database server's certificate: TLS to MySQL/MariaDB or PostgreSQL, verifying the certificate and host name")
	fs.DurationVar(&o.connectTimeout, "database-connect-timeout", time.Minute, "how long to retry an unreachable database at start-up before giving up")
}

// setup builds the logger and parses the DSN: what every command that uses
// the database checks first, before anything is opened.
func setup(cmd *cobra.Command, db *dbOptions, lg *logOptions) (*slog.Logger, model.DSN, error) {
	log, err := lg.logger(cmd.ErrOrStderr())
	if err != nil {
		return nil, model.DSN{}, err
	}
	dsn, err := db.parse(cmd.Flags())
	if err != nil {
		return nil, model.DSN{}, err
	}
	return log, dsn, nil
}

// parse resolves and parses the DSN without connecting.
func (o *dbOptions) parse(fs *pflag.FlagSet) (model.DSN, error) {
	if o.dsnFile != "" && fs.Changed("database-dsn") {
		if _, ok := os.LookupEnv(envName("database-dsn")); ok {
			return model.DSN{}, usagef("--database-dsn (from %s) and --database-dsn-file are both set: give only one", envName("database-dsn"))
		}
		return model.DSN{}, usagef("--database-dsn and --database-dsn-file are both set: give only one")
	}
	if o.connectTimeout < 0 {
		return model.DSN{}, usagef("--database-connect-timeout must not be negative (got %s)", o.connectTimeout)
	}
	var (
		dsn model.DSN
		err error
	)
	if o.dsnFile != "" {
		dsn, err = model.ParseDSNFile(o.dsnFile)
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			return model.DSN{}, usagef("cannot read --database-dsn-file %s: %v", o.dsnFile, pe.Err)
		}
	} else {
		dsn, err = model.ParseDSN(o.dsn)
	}
	if err != nil {
		return model.DSN{}, usageError{err}
	}
	if o.caFile != "" {
		if dsn, err = dsn.WithCAFile(o.caFile); err != nil {
			return model.DSN{}, usagef("--database-ca-file: %v", err)
		}
	}
	return dsn, nil
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// open connects, retrying for connectTimeout.
func (o *dbOptions) open(ctx context.Context, dsn model.DSN, log *slog.Logger) (*gorm.DB, error) {
	return model.OpenWith(ctx, dsn, model.OpenOptions{Wait: o.connectTimeout, Log: log, Limits: o.limits, MaxConns: o.maxConns})
}

// openMigrated connects and migrates the ledger and the tables of defs.
func (o *dbOptions) openMigrated(ctx context.Context, dsn model.DSN, defs []jobs.Definition, log *slog.Logger) (*gorm.DB, error) {
	db, err := o.open(ctx, dsn, log)
	if err != nil {
		return nil, err
	}
	if err := jobs.Migrate(ctx, db, defs); err != nil {
		_ = model.Close(db)
		return nil, fmt.Errorf("migrate %s: %w", dsn, dsn.Scrub(err))
	}
	return db, nil
}

// openExisting opens a database that must exist already, for the commands
// that read it or change only what it holds (status, verify, dedupe): a
// missing SQLite file is bad configuration, reported before anything is
// written, and the file is opened without the create flag, so such a
// command never leaves an empty database behind.
func (o *dbOptions) openExisting(ctx context.Context, dsn model.DSN, log *slog.Logger) (*gorm.DB, error) {
	if dsn.Dialect == model.SQLite {
		_, err := os.Stat(dsn.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, usagef("no database at %s: give --database-dsn or --database-dsn-file, or run 'leasecron migrate' first", dsn.Path)
		}
		if err != nil {
			return nil, usagef("cannot read the database %s: %v", dsn.Path, unwrapPathErr(err))
		}
	}
	return o.open(ctx, dsn.NoCreate(), log)
}

// positive checks that every named duration is above zero.
func positive(durations map[string]time.Duration) error {
	for name, d := range durations {
		if d <= 0 {
			return usagef("--%s must be a positive duration such as 30s or 10m (got %s)", name, d)
		}
	}
	return nil
}

// parseDay parses a --date/--from/--to value.
func parseDay(flag, v string) (model.Date, error) {
	d, err := model.ParseDate(v)
	if err != nil {
		return model.Date{}, usagef("--%s %q is not a date: write it as YYYY-MM-DD", flag, v)
	}
	return d, nil
}

// manualHolder names a one-off process in the ledger.
func manualHolder(verb string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%s:%d", verb, host, os.Getpid())
}
