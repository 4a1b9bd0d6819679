package model

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// Dialect names, as they appear in a DSN's scheme.
const (
	SQLite   = "sqlite"
	MySQL    = "mysql"
	Postgres = "postgres"
)

// DefaultDSN is the embedded database a local run uses when no DSN is given.
const DefaultDSN = "sqlite://leasecron.db"

const redactedPassword = "xxxxx"

// DSN is a parsed database address. Its String form never contains the password.
type DSN struct {
	// Dialect is SQLite, MySQL or Postgres.
	Dialect string
	// Path is the SQLite database file (SQLite only).
	Path string

	driver   string // what the driver's Open takes
	redacted string
	password string
}

// String returns the DSN with its password replaced by "xxxxx".
func (d DSN) String() string { return d.redacted }

// Scrub returns err with every occurrence of the DSN's password replaced, so a
// driver error can be logged or returned safely. It returns nil for nil.
func (d DSN) Scrub(err error) error {
	if err == nil || d.password == "" || !strings.Contains(err.Error(), d.password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), d.password, redactedPassword))
}

// ParseDSN parses a DSN in URL form:
//
//	sqlite:///abs/path.db   sqlite://rel/path.db
//	mysql://user:pass@host:3306/db?opt=v   (also mysql://user:pass@tcp(host:3306)/db)
//	postgres://user:pass@host:5432/db?sslmode=disable   (or postgresql://)
//
// Errors name the problem without echoing the password.
func ParseDSN(s string) (DSN, error) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(s), "://")
	if !ok || scheme == "" {
		return DSN{}, errors.New("database DSN has no scheme: write it as sqlite://PATH, mysql://USER:PASS@HOST:PORT/DB or postgres://USER:PASS@HOST:PORT/DB")
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3":
		return parseSQLite(rest)
	case "mysql", "mariadb":
		return parseMySQL(rest)
	case "postgres", "postgresql":
		return parsePostgres("postgres://" + rest)
	default:
		return DSN{}, fmt.Errorf("database DSN scheme %q is not supported: use sqlite://, mysql:// or postgres://", scheme)
	}
}

func parseSQLite(rest string) (DSN, error) {
	path, query, _ := strings.Cut(rest, "?")
	if path == "" {
		return DSN{}, errors.New("sqlite DSN has no file path: write sqlite:///abs/path.db or sqlite://rel/path.db")
	}
	if query != "" {
		return DSN{}, fmt.Errorf("sqlite DSN takes no options (got %q): leasecron sets the pragmas it needs; remove everything after '?'", query)
	}
	path = filepath.Clean(path)
	// WAL lets readers (status, readiness checks) proceed beside the leader's
	// writes; immediate transactions take the write lock up front, so two
	// writers queue on the busy timeout instead of failing to upgrade a lock.
	opts := url.Values{}
	opts.Add("_pragma", "busy_timeout(10000)")
	opts.Add("_pragma", "journal_mode(WAL)")
	opts.Add("_pragma", "synchronous(NORMAL)")
	// No _time_format: the driver's default is already SQLite's own format,
	// and the driver (glebarez/go-sqlite up to v1.23.0) stops reading the
	// options after _time_format, so _txlock would be silently ignored and
	// every transaction would begin deferred.
	opts.Set("_txlock", "immediate")
	return DSN{
		Dialect:  SQLite,
		Path:     path,
		driver:   "file:" + path + "?" + opts.Encode(),
		redacted: "sqlite://" + path,
	}, nil
}

func parseMySQL(rest string) (DSN, error) {
	var cfg *mysql.Config
	if strings.Contains(rest, "@tcp(") || strings.Contains(rest, "@unix(") || strings.HasPrefix(rest, "tcp(") {
		// The go-sql-driver form: user:pass@tcp(host:3306)/db?opts.
		c, err := mysql.ParseDSN(rest)
		if err != nil {
			return DSN{}, fmt.Errorf("mysql DSN is not valid (%s): write it as mysql://USER:PASS@HOST:PORT/DB", scrubMsg(err.Error(), rest))
		}
		cfg = c
	} else {
		u, err := url.Parse("mysql://" + rest)
		if err != nil {
			return DSN{}, fmt.Errorf("mysql DSN is not a valid URL: write it as mysql://USER:PASS@HOST:PORT/DB")
		}
		if u.Host == "" {
			return DSN{}, errors.New("mysql DSN has no host: write it as mysql://USER:PASS@HOST:PORT/DB")
		}
		cfg = mysql.NewConfig()
		cfg.Net = "tcp"
		cfg.Addr = u.Host
		if u.Port() == "" {
			cfg.Addr = u.Host + ":3306"
		}
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
		cfg.DBName = strings.TrimPrefix(u.Path, "/")
		if u.RawQuery != "" {
			// Let the driver validate options exactly as it would in its own form.
			c, err := mysql.ParseDSN("x@tcp(h)/d?" + u.RawQuery)
			if err != nil {
				return DSN{}, fmt.Errorf("mysql DSN option is not valid (%v): check the text after '?'", err)
			}
			cfg.Params = c.Params
			cfg.TLSConfig = c.TLSConfig
			cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = c.Timeout, c.ReadTimeout, c.WriteTimeout
			cfg.Collation = c.Collation
			cfg.AllowNativePasswords = c.AllowNativePasswords
		}
	}
	if cfg.DBName == "" {
		return DSN{}, errors.New("mysql DSN has no database name: write it as mysql://USER:PASS@HOST:PORT/DB")
	}
	// Times travel as UTC and DATE columns come back as time.Time; dates are
	// written as 'YYYY-MM-DD' text, so neither the server's nor the driver's
	// zone can shift a calendar date.
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	password := cfg.Passwd
	red := cfg.Clone()
	if red.Passwd != "" {
		red.Passwd = redactedPassword
	}
	return DSN{
		Dialect:  MySQL,
		driver:   cfg.FormatDSN(),
		redacted: "mysql://" + redactedMySQL(red),
		password: password,
	}, nil
}

func redactedMySQL(c *mysql.Config) string {
	user := c.User
	if c.Passwd != "" {
		user += ":" + c.Passwd
	}
	if user != "" {
		user += "@"
	}
	return user + c.Addr + "/" + c.DBName
}

func parsePostgres(s string) (DSN, error) {
	u, err := url.Parse(s)
	if err != nil {
		return DSN{}, errors.New("postgres DSN is not a valid URL: write it as postgres://USER:PASS@HOST:PORT/DB?sslmode=disable")
	}
	if u.Host == "" {
		return DSN{}, errors.New("postgres DSN has no host: write it as postgres://USER:PASS@HOST:PORT/DB")
	}
	password, _ := u.User.Password()
	if _, err := pgconn.ParseConfig(s); err != nil {
		return DSN{}, fmt.Errorf("postgres DSN is not valid (%s): write it as postgres://USER:PASS@HOST:PORT/DB", scrubMsg(err.Error(), password))
	}
	return DSN{
		Dialect:  Postgres,
		driver:   s,
		redacted: u.Redacted(),
		password: password,
	}, nil
}

// scrubMsg removes secret from msg; used before an error built from the DSN
// text itself is shown.
func scrubMsg(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, redactedPassword)
}
