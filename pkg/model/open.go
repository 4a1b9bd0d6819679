package model

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Open opens the database the DSN names and waits until it answers,
// retrying with capped exponential backoff for at most wait (0: one try).
// The error, if any, carries the redacted DSN, never the password. A nil
// log means slog.Default().
func Open(ctx context.Context, dsn DSN, wait time.Duration, log *slog.Logger) (*gorm.DB, error) {
	return OpenWith(ctx, dsn, OpenOptions{Wait: wait, Log: log})
}

// OpenOptions configure OpenWith.
type OpenOptions struct {
	// Wait is how long to retry while the database does not answer (0: one try).
	Wait time.Duration
	// Log receives a line per failed attempt. Default slog.Default().
	Log *slog.Logger
	// Limits are set on every session (see SessionLimits).
	Limits SessionLimits
	// MaxConns bounds the pool's open connections, idle ones kept up to
	// the same number. Default DefaultMaxConns. A bound keeps a burst of
	// slots from opening more connections than the server accepts (its
	// refusals would become retries); work waits for a free connection
	// instead.
	MaxConns int
}

// DefaultMaxConns is the pool bound of OpenOptions.MaxConns: measured with
// 1,000 slots due in one second, 5, 20 and 50 connections all finished
// later than 10 on MariaDB and PostgreSQL (BENCHMARKS.md).
const DefaultMaxConns = 10

// OpenWith is Open with session limits. A DSN from ParseDSNFile gives a
// pool whose new connections follow the file (see ParseDSNFile); one with
// WithCAFile, connections verified against the CA.
func OpenWith(ctx context.Context, dsn DSN, o OpenOptions) (*gorm.DB, error) {
	if dsn.Dialect != MySQL || o.Limits.IsZero() {
		return openPool(ctx, dsn, o, false)
	}
	// MariaDB and MySQL name the limits differently: ask, then open the
	// pool with the right session variables on every connection.
	probe := o
	probe.Limits = SessionLimits{}
	db, err := openPool(ctx, dsn, probe, false)
	if err != nil {
		return nil, err
	}
	maria, err := isMariaDB(ctx, db)
	_ = Close(db)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", dsn, dsn.Scrub(err))
	}
	db, err = openPool(ctx, dsn, o, maria)
	if idle := o.Limits.IdleInTransaction; err == nil && !maria && idle > 0 {
		// MySQL's wait_timeout also ends idle pooled sessions: retire them first.
		if sqlDB, derr := db.DB(); derr == nil {
			sqlDB.SetConnMaxIdleTime(idle / 2)
		}
	}
	return db, err
}

// openPool opens the pool, retrying for o.Wait; maria says which names
// MySQL-protocol session limits take.
func openPool(ctx context.Context, dsn DSN, o OpenOptions, maria bool) (*gorm.DB, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	var (
		dialector gorm.Dialector
		connector driver.Connector
	)
	switch dsn.Dialect {
	case SQLite:
		dialector = sqlite.Open(dsn.driver)
	case MySQL, Postgres:
		var err error
		if connector, err = dsn.poolConnector(o.Limits, maria, log); err != nil {
			return nil, fmt.Errorf("database %s: %w", dsn, dsn.Scrub(err))
		}
	default:
		return nil, fmt.Errorf("unknown dialect %q", dsn.Dialect)
	}
	start := time.Now()
	deadline := start.Add(o.Wait)
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		db, err := connect(ctx, dsn.Dialect, dialector, connector, o.MaxConns)
		if err == nil {
			return db, nil
		}
		err = dsn.Scrub(err)
		if CertificateRefused(err) {
			// The server's certificate does not change by waiting.
			return nil, fmt.Errorf("database %s: its TLS certificate is not accepted (not retried: check the CA file and the DSN's host name): %w", dsn, err)
		}
		// The last wait is cut short so that the last attempt comes at
		// the deadline: the whole of wait is used, and no more.
		remaining := time.Until(deadline)
		if ctx.Err() != nil || remaining <= 0 {
			return nil, fmt.Errorf("database %s is unreachable after %d attempts over %s: %w", dsn, attempt, time.Since(start).Round(time.Millisecond), err)
		}
		sleep := min(backoff, remaining)
		log.Warn("database unreachable, retrying", "dsn", dsn.String(), "attempt", attempt, "retry_in", sleep, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(sleep):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// connect opens a pool and checks that the server answers within 5 s (and
// ctx). Some dialects query the server while opening, so both steps are
// retried together. The server dialects' pools are opened on the DSN's
// connector (its TLS, its file) and pinged under ctx before gorm gets
// them: gorm's MySQL dialect asks the server's version while it opens,
// without a context, and a server that accepts the connection but never
// answers (a partition) would hold it there for good.
func connect(ctx context.Context, dialect string, dialector gorm.Dialector, connector driver.Connector, maxConns int) (*gorm.DB, error) {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var pool *sql.DB
	if connector != nil {
		pool = sql.OpenDB(connector)
		if err := pool.PingContext(pctx); err != nil {
			_ = pool.Close()
			return nil, err
		}
		if dialect == MySQL {
			dialector = mysql.New(mysql.Config{Conn: pool})
		} else {
			dialector = postgres.New(postgres.Config{Conn: pool})
		}
	}
	db, err := gorm.Open(dialector, &gorm.Config{
		// leasecron logs failures itself, with the slot and job they belong to.
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		// Unique-key violations surface as gorm.ErrDuplicatedKey on every dialect.
		TranslateError:       true,
		DisableAutomaticPing: true,
		NowFunc:              func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		if pool != nil {
			_ = pool.Close()
		}
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetConnMaxLifetime(5 * time.Minute)
	sqlDB.SetMaxOpenConns(maxConns)
	sqlDB.SetMaxIdleConns(maxConns)
	sqlDB.SetConnMaxIdleTime(time.Minute)
	if err := sqlDB.PingContext(pctx); err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	return db, nil
}

// Ping checks that the database answers within ctx.
func Ping(ctx context.Context, db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// Close closes the database's connections.
func Close(db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}
