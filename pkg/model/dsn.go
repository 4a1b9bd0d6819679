package model

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
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

// DSN is a parsed database address. Its String form never contains a
// credential.
//
// Credentials are the password of the URL's user (every dialect) and, for
// PostgreSQL, the query parameters password, sslpassword (the client key's
// passphrase) and sslkey (a path, or with sslinline the key itself); MySQL
// query parameters named like a password are treated the same way. The
// accepted forms are the URL forms ParseDSN lists: key=value strings are
// refused, so they need no redaction.
type DSN struct {
	// Dialect is SQLite, MySQL or Postgres.
	Dialect string
	// Path is the SQLite database file (SQLite only).
	Path string

	driver   string // what the driver's Open takes
	redacted string
	secrets  []string // every credential, as written and decoded, longest first
	database string   // the database's name (servers), which a DSN file may not change

	ca   *caBundle // WithCAFile: verify the server's certificate with this CA
	file *dsnFile  // ParseDSNFile: re-read for every new connection
}

// String returns the DSN with every credential replaced by "xxxxx".
func (d DSN) String() string { return d.redacted }

// NoCreate returns the DSN for a command that works on an existing database:
// a SQLite file is opened read-write without the create flag, so a missing
// file is an error rather than a new, empty database. Database servers never
// create a database on connect, so other dialects are returned as they are.
func (d DSN) NoCreate() DSN {
	if d.Dialect == SQLite {
		d.driver = strings.Replace(d.driver, "?", "?mode=rw&", 1)
	}
	return d
}

// Scrub returns err with every occurrence of the DSN's credentials replaced,
// in the form they were written and decoded, so a driver error that echoes
// the DSN can be logged or returned safely. It returns nil for nil.
func (d DSN) Scrub(err error) error {
	if err == nil {
		return nil
	}
	msg := scrubMsg(err.Error(), d.secrets)
	if d.file != nil {
		msg = scrubMsg(msg, d.file.secrets())
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
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
	var (
		cfg     *mysql.Config
		secrets []string
	)
	if strings.Contains(rest, "@tcp(") || strings.Contains(rest, "@unix(") || strings.HasPrefix(rest, "tcp(") {
		// The go-sql-driver form: user:pass@tcp(host:3306)/db?opts.
		c, err := mysql.ParseDSN(rest)
		if err != nil {
			return DSN{}, fmt.Errorf("mysql DSN is not valid (%s): write it as mysql://USER:PASS@HOST:PORT/DB", scrubMsg(err.Error(), secretForms(rest, driverFormPassword(rest))))
		}
		cfg = c
		secrets = secretForms(driverFormPassword(rest), cfg.Passwd)
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
		secrets = urlSecrets("mysql://"+rest, cfg.Passwd)
		if u.RawQuery != "" {
			// Let the driver validate options exactly as it would in its own form.
			c, err := mysql.ParseDSN("x@tcp(h)/d?" + u.RawQuery)
			if err != nil {
				return DSN{}, fmt.Errorf("mysql DSN option is not valid (%s): check the text after '?'", scrubMsg(err.Error(), secrets))
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
	red := cfg.Clone()
	if red.Passwd != "" {
		red.Passwd = redactedPassword
	}
	return DSN{
		Dialect:  MySQL,
		driver:   cfg.FormatDSN(),
		redacted: "mysql://" + redactedMySQL(red),
		secrets:  secrets,
		database: cfg.DBName,
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
	secrets := urlSecrets(s, password)
	if _, err := pgconn.ParseConfig(s); err != nil {
		// pgconn's message quotes the DSN with only the user's password hidden.
		return DSN{}, fmt.Errorf("postgres DSN is not valid (%s): write it as postgres://USER:PASS@HOST:PORT/DB", scrubMsg(err.Error(), secrets))
	}
	red := *u
	if _, ok := red.User.Password(); ok {
		red.User = url.UserPassword(red.User.Username(), redactedPassword)
	}
	red.RawQuery = redactQuery(u.RawQuery)
	return DSN{
		Dialect:  Postgres,
		driver:   s,
		redacted: red.String(),
		secrets:  secrets,
		database: strings.TrimPrefix(u.Path, "/"),
	}, nil
}

// secretParam reports whether a query parameter carries a credential.
func secretParam(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "password") || k == "sslkey"
}

// paramKey is a raw query key decoded, or as written if it does not decode.
func paramKey(raw string) string {
	if k, err := url.QueryUnescape(raw); err == nil {
		return k
	}
	return raw
}

// redactQuery replaces the value of every credential parameter in a raw
// query, keeping the others as written.
func redactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	pairs := strings.Split(raw, "&")
	for i, pair := range pairs {
		k, _, _ := strings.Cut(pair, "=")
		if secretParam(paramKey(k)) {
			pairs[i] = k + "=" + redactedPassword
		}
	}
	return strings.Join(pairs, "&")
}

// urlSecrets lists the credentials of a DSN in URL form: the user's password
// (decoded, and as written in s) and the values of credential parameters.
func urlSecrets(s, password string) []string {
	rest := s
	if _, after, ok := strings.Cut(rest, "://"); ok {
		rest = after
	}
	rest, _, _ = strings.Cut(rest, "#")
	rest, query, _ := strings.Cut(rest, "?")
	authority, _, _ := strings.Cut(rest, "/")
	var forms []string
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		if _, raw, ok := strings.Cut(authority[:i], ":"); ok {
			forms = append(forms, raw)
		}
	}
	forms = append(forms, password)
	for _, pair := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if !secretParam(paramKey(k)) {
			continue
		}
		forms = append(forms, v)
		if dv, err := url.QueryUnescape(v); err == nil {
			forms = append(forms, dv)
		}
	}
	return secretForms(forms...)
}

// driverFormPassword is the password of a go-sql-driver DSN as written:
// between the first ':' and the last '@' before the last '/'.
func driverFormPassword(s string) string {
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[:i]
	}
	i := strings.LastIndex(s, "@")
	if i < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(s[:i], ":")
	return pw
}

// secretForms returns the secrets and their URL-escaped forms, without
// empties or repeats, longest first (so a secret that contains another is
// replaced whole).
func secretForms(secrets ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range secrets {
		for _, f := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
			if f != "" && !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// scrubMsg replaces every secret in msg; used before an error built from the
// DSN text itself is shown.
func scrubMsg(msg string, secrets []string) string {
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, redactedPassword)
	}
	return msg
}
