package model

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// Transient reports whether err is the kind of database failure that goes
// away by itself: the server unreachable or restarting, a connection lost, a
// statement timed out, a deadlock or a lock wait that was chosen to lose.
// Anything else (a bad row, a missing table, a syntax error) needs a person,
// and retrying it only hides it.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var pgConnect *pgconn.ConnectError
	if errors.As(err, &pgConnect) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources
			strings.HasPrefix(pgErr.Code, "57P"),         // admin shutdown, crash shutdown, cannot connect now
			pgErr.Code == "57014",                        // query canceled (statement_timeout)
			pgErr.Code == "40001", pgErr.Code == "40P01", // serialization failure, deadlock
			pgErr.Code == "25P03", // idle_in_transaction_session_timeout
			pgErr.Code == "55P03": // lock not available
			return true
		}
		return false
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		switch myErr.Number {
		case 1040, // too many connections
			1053, // server shutdown in progress
			1205, // lock wait timeout
			1213, // deadlock
			1927, // connection was killed (MariaDB)
			1969, // max_statement_time exceeded (MariaDB)
			3024, // max_execution_time exceeded (MySQL)
			4031: // disconnected by the server because of inactivity
			return true
		}
		return false
	}
	// SQLite's driver reports a busy database only in its text.
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

// CertificateRefused reports whether err is the server's TLS certificate
// failing verification (an unknown CA, a name it does not hold, expired):
// never transient.
func CertificateRefused(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// Deadlock reports whether err is a deadlock or a serialization failure the
// database chose this transaction to lose: running the transaction again is
// the documented answer.
func Deadlock(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Number == 1213
	}
	return false
}
