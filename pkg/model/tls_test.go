package model_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
	"gorm.io/gorm"
)

// TestWithCAFileRefuses: a CA file that cannot verify anything, or a DSN
// whose own TLS settings contradict it, is refused with an error that names
// the file and says what to do, never the password.
func TestWithCAFileRefuses(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct{ dsn, ca, want string }{
		{"sqlite://x.db", ca, "SQLite has no server"},
		{"mysql://u:s3cret@h/db", unreadable, "cannot read the CA file " + unreadable + ": no such file or directory"},
		{"mysql://u:s3cret@h/db", notPEM, "CA file " + notPEM + " holds no PEM certificate"},
		{"postgres://u:s3cret@h/db", dir, "cannot read the CA file " + dir},
		{"mysql://u:s3cret@h/db?tls=skip-verify", ca, "tls=skip-verify contradicts the CA file"},
		{"mysql://u:s3cret@h/db?tls=false", ca, "tls=false contradicts the CA file"},
		{"mysql://u:s3cret@h/db?tls=preferred", ca, "tls=preferred contradicts the CA file"},
		{"postgres://u:s3cret@h/db?sslmode=disable", ca, "sslmode=disable allows a connection the CA file"},
		{"postgres://u:s3cret@h/db?sslmode=prefer", ca, "sslmode=prefer allows a connection the CA file"},
		{"postgres://u:s3cret@h/db?sslrootcert=" + ca, ca, "sets sslrootcert and the CA file"},
	} {
		t.Run(tc.dsn+" "+filepath.Base(tc.ca), func(t *testing.T) {
			d, err := model.ParseDSN(tc.dsn)
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.WithCAFile(tc.ca)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WithCAFile = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error leaks the password or is not one line: %v", err)
			}
		})
	}
	for _, ok := range []string{"mysql://u@h/db?tls=true", "postgres://u@h/db?sslmode=verify-ca", "postgres://u@h/db?sslmode=verify-full"} {
		d, err := model.ParseDSN(ok)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WithCAFile(ca); err != nil {
			t.Errorf("%s with a CA file: %v", ok, err)
		}
	}
}

// TestTLSWithCA runs against the managed servers with TLS on and a user the
// server admits only over TLS. With the server's CA the connection is
// verified (chain and host name) and a ledger round trip works; without TLS,
// with another CA, or under a name the certificate does not hold
// ("localhost": the certificate names 127.0.0.1 only), it fails with an
// error that says why and holds no password. PostgreSQL's sslmode=verify-ca
// checks the chain alone, so there the other name connects.
func TestTLSWithCA(t *testing.T) {
	for _, dialect := range []string{"mysql", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			srv := testenv.ServerFor(t, dialect)
			raw := srv.User(t, srv.DSN(t), testenv.UserOptions{RequireTLS: true})
			password := userPassword(t, raw)
			ca := srv.CAFile(t)
			wrongCA := writeCA(t, t.TempDir())
			plain := map[string]string{"mysql": raw, "postgres": withQuery(t, raw, "sslmode", "disable")}[dialect]
			localhost := withHost(t, raw, "localhost")

			fails := []struct{ name, dsn, ca, want string }{
				{"no TLS", plain, "", map[string]string{"mysql": "Access denied", "postgres": "no encryption"}[dialect]},
				{"another CA", raw, wrongCA, "certificate signed by unknown authority"},
				{"a name the certificate does not hold", localhost, ca, "wanted to match localhost"},
			}
			for _, tc := range fails {
				t.Run(tc.name, func(t *testing.T) {
					_, err := open(t, tc.dsn, tc.ca)
					if err == nil || !strings.Contains(err.Error(), tc.want) {
						t.Fatalf("open = %v, want an error containing %q", err, tc.want)
					}
					if strings.Contains(err.Error(), password) {
						t.Fatalf("error leaks the password: %v", err)
					}
				})
			}
			// A certificate that fails verification is not retried for the
			// connect timeout: waiting does not change it.
			t.Run("another CA, with a connect timeout", func(t *testing.T) {
				d, err := model.ParseDSN(raw)
				if err != nil {
					t.Fatal(err)
				}
				if d, err = d.WithCAFile(wrongCA); err != nil {
					t.Fatal(err)
				}
				_, err = model.OpenWith(context.Background(), d, model.OpenOptions{Wait: 10 * time.Minute, Log: slog.New(slog.DiscardHandler)})
				if err == nil || !model.CertificateRefused(err) || !strings.Contains(err.Error(), "not retried") || strings.Contains(err.Error(), "attempts") {
					t.Fatalf("open = %v, want the certificate refused at once, not retried", err)
				}
			})
			t.Run("the server's CA", func(t *testing.T) { ledgerRoundTrip(t, raw, ca, dialect, "tls-job") })
			if dialect == "postgres" {
				t.Run("verify-ca under another name", func(t *testing.T) {
					ledgerRoundTrip(t, withQuery(t, localhost, "sslmode", "verify-ca"), ca, dialect, "verify-ca-job")
				})
			}
		})
	}
}

func ledgerRoundTrip(t *testing.T, raw, ca, dialect, job string) {
	t.Helper()
	db, err := open(t, raw, ca)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close(db)
	ctx := context.Background()
	if err := jobs.Migrate(ctx, db, nil); err != nil {
		t.Fatal(err)
	}
	l := jobs.NewLedger(db, "tls-test")
	f, err := l.BeginTerm(ctx, "tls-test")
	if err != nil {
		t.Fatal(err)
	}
	slot := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	if done, err := l.Claim(ctx, f, job, slot); err != nil || done {
		t.Fatalf("Claim = %v, %v", done, err)
	}
	if err := l.Complete(ctx, f, job, slot, nil); err != nil {
		t.Fatal(err)
	}
	last, _, err := l.LastSucceeded(ctx, job)
	if err != nil || !last.Equal(slot) {
		t.Fatalf("LastSucceeded = %s, %v; want %s", last, err, slot)
	}
	var cipher string
	q := map[string]string{"mysql": "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'",
		"postgres": "SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}[dialect]
	if err := db.Raw(q).Scan(&cipher).Error; err != nil || cipher == "" {
		t.Fatalf("the session's TLS cipher = %q, %v: not TLS", cipher, err)
	}
}

// TestDSNFileFollowsRotation: a pool opened on a DSN file uses the file's
// current content for every new connection. After the user's password
// changes and the server ends its sessions, the pool reconnects with the
// new password from the rewritten file (and cannot before it is
// rewritten); a content naming another database or dialect is refused with
// one logged error and the last good DSN goes on. No password, old or new,
// is logged.
func TestDSNFileFollowsRotation(t *testing.T) {
	for _, dialect := range []string{"mysql", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			srv := testenv.ServerFor(t, dialect)
			raw := srv.User(t, srv.DSN(t), testenv.UserOptions{})
			user, oldPassword := userName(t, raw), userPassword(t, raw)
			file := filepath.Join(t.TempDir(), "dsn")
			testenv.ReplaceFile(t, file, raw+"\n")
			dsn, err := model.ParseDSNFile(file)
			if err != nil {
				t.Fatal(err)
			}
			logs := &syncBuffer{}
			log := slog.New(slog.NewJSONHandler(logs, nil))
			ctx := context.Background()
			db, err := model.OpenWith(ctx, dsn, model.OpenOptions{Log: log, Limits: model.SessionLimits{Statement: time.Minute}})
			if err != nil {
				t.Fatal(err)
			}
			defer model.Close(db)
			ping := func() error { return db.WithContext(ctx).Exec("SELECT 1").Error }
			if err := ping(); err != nil {
				t.Fatal(err)
			}
			kill := func() {
				t.Helper()
				if _, err := srv.KillSessions(ctx, user); err != nil {
					t.Fatal(err)
				}
			}

			const newPassword = "rotated0new0pw"
			if err := srv.SetPassword(ctx, user, newPassword); err != nil {
				t.Fatal(err)
			}
			kill()
			if err := eventually(ping, 2*time.Second); err == nil {
				t.Fatal("connected with the old password after the rotation: the test shows nothing")
			}
			testenv.ReplaceFile(t, file, withPassword(t, raw, newPassword))
			if err := eventually(ping, 10*time.Second); err != nil {
				t.Fatalf("no connection with the rewritten DSN file: %v", err)
			}
			if !strings.Contains(logs.String(), "database DSN file changed: new connections use its new content") {
				t.Errorf("no log line for the new content:\n%s", logs)
			}

			for _, bad := range []struct{ content, want string }{
				{withDatabase(t, withPassword(t, raw, newPassword), "lc_other"), "another database needs a restart"},
				{"sqlite://x.db", "a new dialect needs a restart"},
			} {
				testenv.ReplaceFile(t, file, bad.content)
				kill()
				if err := eventually(ping, 10*time.Second); err != nil {
					t.Fatalf("the last good DSN does not go on after %q: %v", bad.content, err)
				}
				if !strings.Contains(logs.String(), bad.want) {
					t.Errorf("no log line saying %q:\n%s", bad.want, logs)
				}
			}
			for _, pw := range []string{oldPassword, newPassword} {
				if strings.Contains(logs.String(), pw) {
					t.Fatalf("the log holds a password:\n%s", logs)
				}
			}
		})
	}
}

func open(t *testing.T, raw, ca string) (*gorm.DB, error) {
	t.Helper()
	d, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ca != "" {
		if d, err = d.WithCAFile(ca); err != nil {
			t.Fatal(err)
		}
	}
	return model.OpenWith(context.Background(), d, model.OpenOptions{Log: slog.New(slog.DiscardHandler)})
}

// eventually calls f until it succeeds or the time is up, and returns its
// last error.
func eventually(f func() error, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeCA writes a CA certificate of another CA into dir.
func writeCA(t *testing.T, dir string) string {
	t.Helper()
	ca, err := testenv.NewCA("another-ca")
	if err != nil {
		t.Fatal(err)
	}
	return ca.WriteFile(t, dir)
}

func parseURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func userName(t *testing.T, raw string) string { return parseURL(t, raw).User.Username() }

func userPassword(t *testing.T, raw string) string {
	pw, _ := parseURL(t, raw).User.Password()
	return pw
}

func withPassword(t *testing.T, raw, pw string) string {
	u := parseURL(t, raw)
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

func withHost(t *testing.T, raw, host string) string {
	u := parseURL(t, raw)
	u.Host = host + ":" + u.Port()
	return u.String()
}

func withDatabase(t *testing.T, raw, name string) string {
	u := parseURL(t, raw)
	u.Path = "/" + name
	return u.String()
}

func withQuery(t *testing.T, raw, key, value string) string {
	u := parseURL(t, raw)
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// syncBuffer is a log destination the pool's goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
