package model

import (
	"bytes"
	"context"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// A DSN read from a file (a mounted Kubernetes Secret, which the kubelet
// rewrites in place when the Secret changes) is read again for every new
// connection a pool opens: when the server ends the old sessions after a
// password rotation, or the pool just needs one more, the new connection
// uses the file's current content, without a restart. Reading the file is
// cheap; the content is parsed again only when it changed.
//
// A new content may change the credentials, the host and the options, not
// what the database is: a DSN of another dialect or another database name
// is refused with one error line, as is one that does not parse, and new
// connections keep using the last good DSN. The CA file (WithCAFile) applies
// to every content. SQLite has no connections to renew: its file is read
// once.

// dsnFile is where a DSN came from, shared by every copy of the DSN, so that
// Scrub also hides the credentials of the file's later contents.
type dsnFile struct {
	path    string
	content []byte // what ParseDSNFile read

	mu        sync.Mutex
	seen      []string // credentials of contents read since, in every form
	announced []byte   // the last new content a pool logged
}

// announce reports whether content is news to the log: the pools of one
// process (the jobs', the leader's own) each switch to a new content, and
// the first of them to see it logs it.
func (f *dsnFile) announce(content []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if bytes.Equal(content, f.announced) {
		return false
	}
	f.announced = content
	return true
}

func (f *dsnFile) secrets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
}

func (f *dsnFile) remember(d DSN) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = secretForms(append(append([]string(nil), f.seen...), d.secrets...)...)
}

// ParseDSNFile reads a DSN from the file at path (surrounding white space
// ignored) and parses it like ParseDSN. A pool that OpenWith opens on the
// result reads the file again for every new connection (see above). An
// error reading the file is an *fs.PathError.
func ParseDSNFile(path string) (DSN, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return DSN{}, err
	}
	b = bytes.TrimSpace(b)
	d, err := ParseDSN(string(b))
	if err != nil {
		return DSN{}, err
	}
	d.file = &dsnFile{path: path, content: b}
	return d, nil
}

// connector returns a driver.Connector for a server DSN with the session
// limits set on every connection (MySQL's under their MariaDB names if
// maria), and the CA's TLS.
func (d DSN) connector(l SessionLimits, maria bool) (driver.Connector, error) {
	switch d.Dialect {
	case MySQL:
		s := d.driver
		if !l.IsZero() {
			var err error
			if s, err = mysqlWithLimits(s, l, maria); err != nil {
				return nil, err
			}
		}
		cfg, err := mysql.ParseDSN(s)
		if err != nil {
			return nil, fmt.Errorf("mysql DSN is not valid: %w", err)
		}
		if d.ca != nil {
			cfg.TLSConfig = ""
			cfg.TLS = d.ca.mysqlTLS(cfg.Addr)
		}
		return mysql.NewConnector(cfg)
	case Postgres:
		s := d.driver
		if !l.IsZero() {
			var err error
			if s, err = postgresWithLimits(s, l); err != nil {
				return nil, err
			}
		}
		cfg, err := pgx.ParseConfig(s)
		if err != nil {
			return nil, err
		}
		return stdlib.GetConnector(*cfg), nil
	}
	return nil, fmt.Errorf("dialect %q has no connector", d.Dialect)
}

// poolConnector is connector, re-reading the DSN's file on every Connect
// when it came from one.
func (d DSN) poolConnector(l SessionLimits, maria bool, log *slog.Logger) (driver.Connector, error) {
	c, err := d.connector(l, maria)
	if err != nil || d.file == nil {
		return c, err
	}
	return &fileConnector{
		base: d, log: log, content: d.file.content, cur: c,
		build: func(next DSN) (driver.Connector, error) { return next.connector(l, maria) },
	}, nil
}

// fileConnector is a driver.Connector whose DSN follows its file.
type fileConnector struct {
	base  DSN // the DSN the pool was opened with: its dialect, database, CA and file
	build func(DSN) (driver.Connector, error)
	log   *slog.Logger

	mu      sync.Mutex
	content []byte           // the content cur was built from
	cur     driver.Connector // what new connections use
	refused []byte           // the last content that could not be used (logged once)
	readErr string           // the last error reading the file (logged once)
}

// Connect connects with the DSN the file holds now.
func (c *fileConnector) Connect(ctx context.Context) (driver.Conn, error) {
	return c.current().Connect(ctx)
}

// Driver returns the dialect's driver (the same whatever the content).
func (c *fileConnector) Driver() driver.Driver {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.Driver()
}

func (c *fileConnector) current() driver.Connector {
	c.mu.Lock()
	defer c.mu.Unlock()
	path := c.base.file.path
	b, err := os.ReadFile(path)
	if err != nil {
		// A Secret being swapped in, say: keep the last good DSN.
		if msg := err.Error(); msg != c.readErr {
			c.readErr = msg
			c.log.Error("cannot read the database DSN file: new connections keep its last good content", "file", path, "err", err)
		}
		return c.cur
	}
	c.readErr = ""
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, c.content) || bytes.Equal(b, c.refused) {
		return c.cur
	}
	next, dsn, err := c.load(string(b))
	news := c.base.file.announce(b)
	if err != nil {
		c.refused = b
		if news {
			c.log.Error("database DSN file changed, but its new content cannot be used: new connections keep the previous DSN", "file", path, "err", c.base.Scrub(err))
		}
		return c.cur
	}
	c.content, c.cur, c.refused = b, next, nil
	if news {
		c.log.Info("database DSN file changed: new connections use its new content", "file", path, "dsn", dsn.String())
	}
	return c.cur
}

// load parses a new content of the file and builds its connector.
func (c *fileConnector) load(raw string) (driver.Connector, DSN, error) {
	d, err := ParseDSN(raw)
	if err != nil {
		return nil, DSN{}, err
	}
	c.base.file.remember(d)
	if d.Dialect != c.base.Dialect {
		return nil, DSN{}, fmt.Errorf("it names a %s database, and this pool is %s: a new dialect needs a restart", d.Dialect, c.base.Dialect)
	}
	if d.database != c.base.database {
		return nil, DSN{}, fmt.Errorf("it names the database %q, and this pool's is %q: another database needs a restart", d.database, c.base.database)
	}
	if c.base.ca != nil {
		if d, err = d.withCA(c.base.ca); err != nil {
			return nil, DSN{}, err
		}
	}
	d.file = c.base.file
	conn, err := c.build(d)
	if err != nil {
		return nil, DSN{}, err
	}
	return conn, d, nil
}
