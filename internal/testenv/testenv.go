// Package testenv gives tests real, throwaway databases: SQLite files, and
// databases on real MariaDB and PostgreSQL servers. There are no mocks.
//
// Design:
//
//   - Each DSN call returns a fresh, empty, uniquely named database
//     (lc_<random hex>) that is dropped in t.Cleanup, so tests are isolated
//     from each other and may run in parallel.
//   - MariaDB and PostgreSQL servers are started lazily, at most once per test
//     binary, and shared by all tests of that binary. Each server gets its own
//     temp dir (data dir, unix socket, log) under one base dir and listens on a
//     random free port on 127.0.0.1, so test binaries of different packages
//     (which `go test ./...` runs in parallel) never share a server, and the
//     system's own MariaDB/PostgreSQL services are neither needed nor touched.
//   - Readiness is detected by connecting (polling), never by sleeping.
//   - Main stops every server and removes the base dir when the tests finish
//     (or on SIGINT/SIGTERM). If the test binary dies without running that
//     cleanup, the servers die with it (Linux parent-death signal), and the
//     next test binary removes its stale base dir (detected with flock).
//   - PostgreSQL refuses to run as root, so when the tests run as root the
//     server runs as the "postgres" user (or "nobody") via
//     SysProcAttr.Credential; MariaDB runs with --user=root.
//   - If LEASECRON_TEST_MYSQL_DSN or LEASECRON_TEST_POSTGRES_DSN holds an admin
//     DSN (URL form, see DSN), that existing server is used instead of starting
//     one; databases are still created per DSN call and dropped afterwards.
//   - MySQLServer and PostgresServer expose a managed server's Stop and Start
//     (same port, same data dir) for outage tests.
//   - StartPostgres starts a PostgreSQL server of one test's own, with extra
//     server settings (shared_preload_libraries and the like), stopped in
//     that test's cleanup; the shared servers are unaffected.
//   - Managed servers have TLS on, with a certificate for 127.0.0.1 signed
//     by a CA of their own (Server.CAFile; tls.go also makes the Kubernetes
//     control plane's), not required: Server.User creates a user whose
//     password is checked and, if asked, who may connect only over TLS, and
//     SetPassword and KillSessions rotate its password as an operator would.
//   - A test that cannot get its server fails (t.Fatal); it never skips. The
//     server binaries are installed by hack/install-test-deps.sh.
//
// A package using the servers must have:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	envMySQLDSN    = "LEASECRON_TEST_MYSQL_DSN"
	envPostgresDSN = "LEASECRON_TEST_POSTGRES_DSN"
	installHint    = "run hack/install-test-deps.sh (as root) to install MariaDB and PostgreSQL"
	readyTimeout   = 60 * time.Second
	initTimeout    = 2 * time.Minute
	stopTimeout    = 30 * time.Second
	baseDirGlob    = "leasecron-testenv-*"
)

// Dialects lists the database dialects every data-layer test runs against.
func Dialects() []string { return []string{"sqlite", "mysql", "postgres"} }

// DSN returns a DSN for a fresh, empty database of the given dialect, which
// is dropped (or removed) in t.Cleanup:
//
//	sqlite:   sqlite:///abs/path/to/file.db                         (in t.TempDir())
//	mysql:    mysql://root@127.0.0.1:PORT/lc_<hex>
//	postgres: postgres://postgres@127.0.0.1:PORT/lc_<hex>?sslmode=disable
//
// With LEASECRON_TEST_MYSQL_DSN / LEASECRON_TEST_POSTGRES_DSN set, the user, password,
// host and query of the override are kept and only the database name changes.
func DSN(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case "sqlite":
		return "sqlite://" + filepath.ToSlash(filepath.Join(t.TempDir(), "test.db"))
	case "mysql", "postgres":
		return sharedServer(t, dialect).DSN(t)
	}
	t.Fatalf("testenv: unknown dialect %q, want one of %q", dialect, Dialects())
	return ""
}

// MySQLServer returns the MariaDB server that DSN(t, "mysql") uses, starting
// it if needed. Stop and Start let outage tests take it down and bring it
// back on the same port and data dir; if the test leaves it stopped, it is
// started again in t.Cleanup so later tests are unaffected.
func MySQLServer(t testing.TB) *Server {
	t.Helper()
	return serverWithRestart(t, "mysql")
}

// PostgresServer is MySQLServer for PostgreSQL.
func PostgresServer(t testing.TB) *Server {
	t.Helper()
	return serverWithRestart(t, "postgres")
}

func serverWithRestart(t testing.TB, dialect string) *Server {
	t.Helper()
	s := sharedServer(t, dialect)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		if err := s.ensureRunning(ctx); err != nil {
			t.Errorf("testenv: restarting %s after the test: %v", s.name, err)
		}
	})
	return s
}

// Main runs the tests, then stops every server this package started and
// removes their temp dirs, and exits with the tests' exit code.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with cleanup of its own; it
// returns the tests' exit code.
func Run(m *testing.M) int {
	reg.mu.Lock()
	reg.inMain = true
	reg.mu.Unlock()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		shutdown()
		fmt.Fprintf(os.Stderr, "testenv: %v: stopped test database servers\n", sig)
		os.Exit(1)
	}()

	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	shutdown()
	return code
}

// reg is the per-test-binary registry of shared servers.
var reg struct {
	mu       sync.Mutex
	inMain   bool      // Main is running the tests
	closed   bool      // Main has shut everything down
	baseDir  string    // temp dir holding every managed server's files
	baseLock *os.File  // flock held on baseDir while this binary lives
	managed  []*Server // servers to stop at shutdown
}

// shared holds the lazily started server of each server dialect.
var shared = map[string]*lazy{"mysql": {}, "postgres": {}}

type lazy struct {
	once sync.Once
	srv  *Server
	err  error
}

// sharedServer returns the server for dialect, starting it on first use.
func sharedServer(t testing.TB, dialect string) *Server {
	t.Helper()
	reg.mu.Lock()
	inMain := reg.inMain
	reg.mu.Unlock()
	if !inMain {
		t.Fatalf("testenv: %s databases need `func TestMain(m *testing.M) { testenv.Main(m) }` in this package, so the servers are stopped when the tests end", dialect)
	}
	l := shared[dialect]

	l.once.Do(func() {
		start := time.Now()
		l.srv, l.err = newServer(dialect)
		if l.err == nil {
			t.Logf("testenv: %s ready at %s after %v", l.srv.name, l.srv.admin.Redacted(), time.Since(start).Round(time.Millisecond))
		}
	})
	if l.err != nil {
		t.Fatalf("testenv: %s: %v", dialect, l.err)
	}
	return l.srv
}

func newServer(dialect string) (*Server, error) {
	envVar := map[string]string{"mysql": envMySQLDSN, "postgres": envPostgresDSN}[dialect]
	if dsn := os.Getenv(envVar); dsn != "" {
		return newExternalServer(dialect, envVar, dsn)
	}
	dir, err := baseDir()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), initTimeout)
	defer cancel()
	var s *Server
	switch dialect {
	case "mysql":
		s, err = startMariaDB(ctx, dir)
	case "postgres":
		s, err = startPostgres(ctx, dir)
	}
	if err != nil {
		return nil, err
	}
	reg.mu.Lock()
	closed := reg.closed
	if !closed {
		reg.managed = append(reg.managed, s)
	}
	reg.mu.Unlock()
	if closed { // Main finished while we were starting it: don't leak it.
		s.Stop(ctx)
		return nil, errors.New("testenv.Main has already finished")
	}
	return s, nil
}

// baseDir creates (once) the temp dir holding all managed servers' files,
// after removing stale ones left by test binaries that died.
func baseDir() (string, error) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.closed {
		return "", errors.New("testenv.Main has already finished")
	}
	if reg.baseDir != "" {
		return reg.baseDir, nil
	}
	removeStaleBaseDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("leasecron-testenv-%d-", os.Getpid()))
	if err != nil {
		return "", err
	}
	lock, err := os.Open(dir)
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	// 0711: an unprivileged server user (PostgreSQL) must traverse it.
	if err == nil {
		err = os.Chmod(dir, 0o711)
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		os.RemoveAll(dir)
		return "", fmt.Errorf("creating temp dir: %w", err)
	}
	reg.baseDir, reg.baseLock = dir, lock
	return dir, nil
}

// removeStaleBaseDirs removes base dirs whose owner is gone: the owner holds
// an flock on its dir for its whole life. The age check covers the instant
// between a dir's creation and its locking.
func removeStaleBaseDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), baseDirGlob))
	for _, dir := range dirs {
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(dir)
		}
		f.Close()
	}
}

// shutdown stops every managed server and removes the base dir. Idempotent.
func shutdown() {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.closed {
		return
	}
	reg.closed = true
	var wg sync.WaitGroup
	for _, s := range reg.managed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			if err := s.Stop(ctx); err != nil {
				fmt.Fprintf(os.Stderr, "testenv: stopping %s: %v\n", s.name, err)
			}
		}()
	}
	wg.Wait()
	if reg.baseDir != "" {
		if err := os.RemoveAll(reg.baseDir); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: removing %s: %v\n", reg.baseDir, err)
		}
		reg.baseLock.Close()
	}
}

// SQLStatements reads a SQL script such as a schema fixture and splits it
// into statements: on semicolons, without the lines that are comments.
func SQLStatements(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var stmts []string
	for _, s := range strings.Split(string(b), ";") {
		var kept []string
		for _, line := range strings.Split(s, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "--") {
				kept = append(kept, line)
			}
		}
		if s := strings.TrimSpace(strings.Join(kept, "\n")); s != "" {
			stmts = append(stmts, s)
		}
	}
	return stmts
}
