package model

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"

	"github.com/go-sql-driver/mysql"
)

// TLS to a database server with a CA of its own (a managed database's, say)
// is one setting for both server dialects, WithCAFile, mapped onto what
// each driver has:
//
//   - PostgreSQL: pgx's own sslrootcert, with sslmode=verify-full unless the
//     DSN asks for verify-ca (or require, which libpq and pgx treat as
//     verify-ca once a root certificate is given): the chain only, not the
//     host name. A DSN that allows an unverified or plain connection
//     (disable, allow, prefer) is refused, as is a second CA in sslrootcert.
//   - MySQL/MariaDB: a *tls.Config of the pool's own on go-sql-driver's
//     Config.TLS (never the driver's process-wide RegisterTLSConfig), which
//     verifies the chain and the host name the DSN dials. A DSN whose tls=
//     says otherwise (false, skip-verify, preferred, a registered name) is
//     refused; tls=true is what the CA gives anyway.
//
// The file is checked once, when the option is given; a DSN file's later
// content gets the same CA and the same checks.

// caBundle is a CA file as WithCAFile read it.
type caBundle struct {
	path string
	pool *x509.CertPool
}

// WithCAFile returns d with TLS to the server verified against the CA
// certificates (PEM) in the file at path: the chain and, unless a
// PostgreSQL DSN asks for sslmode=verify-ca, the host name the DSN dials.
// It fails for SQLite, for a file that cannot be read or holds no PEM
// certificate, and for a DSN whose own TLS settings contradict it; the
// error names the file, never a credential.
func (d DSN) WithCAFile(path string) (DSN, error) {
	if d.Dialect == SQLite {
		return DSN{}, errors.New("a CA file verifies a database server's certificate, and SQLite has no server: remove the CA file, or use a mysql:// or postgres:// DSN")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return DSN{}, fmt.Errorf("cannot read the CA file %s: %v", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return DSN{}, fmt.Errorf("CA file %s holds no PEM certificate: give the CA certificate that signed the server's (-----BEGIN CERTIFICATE-----)", path)
	}
	return d.withCA(&caBundle{path: path, pool: pool})
}

// withCA checks d's own TLS settings against the CA and sets it.
func (d DSN) withCA(ca *caBundle) (DSN, error) {
	switch d.Dialect {
	case MySQL:
		cfg, err := mysql.ParseDSN(d.driver)
		if err != nil {
			return DSN{}, fmt.Errorf("mysql DSN is not valid: %w", d.Scrub(err))
		}
		if cfg.TLSConfig != "" && cfg.TLSConfig != "true" {
			return DSN{}, fmt.Errorf("the DSN's tls=%s contradicts the CA file %s, which verifies the server's certificate and host name: remove tls= from the DSN", cfg.TLSConfig, ca.path)
		}
	case Postgres:
		u, err := url.Parse(d.driver)
		if err != nil {
			return DSN{}, errors.New("postgres DSN is not a valid URL")
		}
		q := u.Query()
		if q.Has("sslrootcert") {
			return DSN{}, fmt.Errorf("the DSN sets sslrootcert and the CA file %s is given too: give the CA once", ca.path)
		}
		switch mode := q.Get("sslmode"); mode {
		case "":
			q.Set("sslmode", "verify-full")
		case "verify-full", "verify-ca", "require":
		default:
			return DSN{}, fmt.Errorf("the DSN's sslmode=%s allows a connection the CA file %s does not verify: remove sslmode (verify-full is used), or set verify-ca to verify the certificate but not the host name", mode, ca.path)
		}
		q.Set("sslrootcert", ca.path)
		u.RawQuery = q.Encode()
		d.driver = u.String()
	}
	d.ca = ca
	return d, nil
}

// mysqlTLS is the TLS configuration of a MySQL connection to addr
// (host:port) under the CA: the chain and the host name are verified.
func (ca *caBundle) mysqlTLS(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return &tls.Config{RootCAs: ca.pool, ServerName: host, MinVersion: tls.VersionTLS12}
}
