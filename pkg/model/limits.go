package model

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"
)

// SessionLimits are server-side limits set on every connection, so that a
// client that died or was cut off in the middle of a transaction does not
// hold its locks for hours (PostgreSQL keeps such a session until TCP
// keepalive gives up, about two hours by default; MariaDB until wait_timeout,
// eight hours). A zero field sets no limit.
//
//	                    PostgreSQL                            MariaDB                   MySQL
//	IdleInTransaction   idle_in_transaction_session_timeout   idle_transaction_timeout  wait_timeout
//	Statement           statement_timeout                     max_statement_time        max_execution_time (SELECT only)
//
// MySQL has no idle-in-transaction limit; its wait_timeout ends any session
// idle that long, in a transaction or not, so the pool drops idle connections
// before the server does. SQLite is in-process: there is no session to lose.
// A limit the DSN already sets is left as the DSN says.
type SessionLimits struct {
	// IdleInTransaction ends a session whose transaction has been idle
	// (no statement running) this long; the server rolls it back.
	IdleInTransaction time.Duration
	// Statement ends any one statement that runs this long.
	Statement time.Duration
}

// IsZero reports whether l sets no limit.
func (l SessionLimits) IsZero() bool { return l == SessionLimits{} }

// postgresWithLimits adds the limits to a PostgreSQL URL as run-time
// parameters, which pgx sends in the startup message.
func postgresWithLimits(dsn string, l SessionLimits) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("postgres DSN is not a valid URL")
	}
	q := u.Query()
	set := func(key string, d time.Duration) {
		if d > 0 && !q.Has(key) {
			q.Set(key, strconv.FormatInt(d.Milliseconds(), 10))
		}
	}
	set("idle_in_transaction_session_timeout", l.IdleInTransaction)
	set("statement_timeout", l.Statement)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// mysqlWithLimits adds the limits to a go-sql-driver DSN as session
// variables, which the driver sets with SET on every new connection. The
// variables differ between MariaDB and MySQL, so the caller asks the server
// which one it is first.
func mysqlWithLimits(dsn string, l SessionLimits, mariaDB bool) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("mysql DSN is not valid: %w", err)
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	set := func(key, value string) {
		if _, ok := cfg.Params[key]; !ok {
			cfg.Params[key] = value
		}
	}
	seconds := func(d time.Duration) string { return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10) }
	if l.IdleInTransaction > 0 {
		if mariaDB {
			set("idle_transaction_timeout", seconds(l.IdleInTransaction))
		} else {
			set("wait_timeout", seconds(l.IdleInTransaction))
		}
	}
	if l.Statement > 0 {
		if mariaDB {
			set("max_statement_time", strconv.FormatFloat(l.Statement.Seconds(), 'f', -1, 64))
		} else {
			set("max_execution_time", strconv.FormatInt(l.Statement.Milliseconds(), 10))
		}
	}
	return cfg.FormatDSN(), nil
}

// isMariaDB asks a MySQL-protocol server whether it is MariaDB.
func isMariaDB(ctx context.Context, db *gorm.DB) (bool, error) {
	var version string
	if err := db.WithContext(ctx).Raw("SELECT VERSION()").Scan(&version).Error; err != nil {
		return false, fmt.Errorf("read server version: %w", err)
	}
	return strings.Contains(strings.ToLower(version), "mariadb"), nil
}

// SessionSettings reads back what the server applies to one connection of db
// for each limit (for tests and for `verify`): the variable's name and its
// value as the server shows it.
func SessionSettings(ctx context.Context, db *gorm.DB) (map[string]string, error) {
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	out := map[string]string{}
	read := func(name, query string) error {
		var v sql.NullString
		if err := conn.QueryRowContext(ctx, query).Scan(&v); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		out[name] = v.String
		return nil
	}
	switch db.Dialector.Name() {
	case Postgres:
		for _, n := range []string{"idle_in_transaction_session_timeout", "statement_timeout"} {
			if err := read(n, "SHOW "+n); err != nil {
				return nil, err
			}
		}
	case MySQL:
		maria, err := isMariaDB(ctx, db)
		if err != nil {
			return nil, err
		}
		names := []string{"wait_timeout", "max_execution_time"}
		if maria {
			names = []string{"idle_transaction_timeout", "max_statement_time"}
		}
		for _, n := range names {
			if err := read(n, "SELECT @@SESSION."+n); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
