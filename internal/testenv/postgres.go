package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// startPostgres runs initdb under base and starts postgres on it.
func startPostgres(ctx context.Context, base string) (*Server, error) {
	return startPostgresIn(ctx, base, "postgres", nil)
}

// startPostgresIn runs initdb in base/name and starts postgres on it, with
// settings (postgres -c NAME=VALUE) after the ones every server gets.
func startPostgresIn(ctx context.Context, base, name string, settings map[string]string) (*Server, error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, name) // owned by the server user; also the socket dir
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(base, name+".log")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}

	initdb := []string{"-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
		"--locale=C", "--no-sync", "--no-instructions"}
	if err := run(ctx, filepath.Join(binDir, "initdb"), initdb, dir, cred, logPath); err != nil {
		return nil, fmt.Errorf("initialising PostgreSQL data dir: %w", err)
	}

	tls, err := writeServerTLS(dir, cred)
	if err != nil {
		return nil, err
	}
	if err := prependHBA(filepath.Join(data, "pg_hba.conf")); err != nil {
		return nil, err
	}

	return startOnFreePort(ctx, func(port int) *Server {
		// fsync etc. off: data survives a server crash, not an OS crash.
		args := []string{"-D", data, "-h", serverHost, "-p", strconv.Itoa(port), "-k", dir,
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "shared_buffers=32MB",
			"-c", "ssl=on", "-c", "ssl_cert_file=" + tls.certFile, "-c", "ssl_key_file=" + tls.keyFile}
		for _, k := range slices.Sorted(maps.Keys(settings)) {
			args = append(args, "-c", k+"="+settings[k])
		}
		return &Server{
			dialect: "postgres",
			name:    "PostgreSQL",
			admin: &url.URL{Scheme: "postgres", User: url.User("postgres"),
				Host: net.JoinHostPort(serverHost, strconv.Itoa(port)), Path: "/postgres",
				RawQuery: "sslmode=disable"},
			caFile:     tls.caFile,
			bin:        filepath.Join(binDir, "postgres"),
			args:       args,
			dir:        dir,
			cred:       cred,
			logPath:    logPath,
			stopSignal: syscall.SIGINT, // fast shutdown: disconnect clients, don't wait for them
		}
	})
}

// Group roles whose members pg_hba.conf treats apart from the trusted rest
// (see Server.User): members of pgPasswordGroup must give their password,
// members of pgTLSGroup must also connect over TLS.
const (
	pgPasswordGroup = "lc_password"
	pgTLSGroup      = "lc_tls"
)

// prependHBA puts the rules for the two groups before initdb's trust rules
// (the first matching line decides). The groups need not exist yet: a rule
// for a group that does not exist matches nobody.
func prependHBA(path string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rules := "# leasecron testenv: see Server.User\n" +
		"hostnossl all +" + pgTLSGroup + " all reject\n" +
		"hostssl   all +" + pgTLSGroup + " all scram-sha-256\n" +
		"host      all +" + pgPasswordGroup + " all scram-sha-256\n"
	return os.WriteFile(path, append([]byte(rules), old...), 0o600)
}

// StartPostgres starts a PostgreSQL server of the test's own, apart from the
// shared one that DSN(t, "postgres") uses, with extra server settings, which
// are given to postgres as -c NAME=VALUE after the ones every testenv
// PostgreSQL gets (so they may override them), for example
//
//	testenv.StartPostgres(t, map[string]string{
//		"shared_preload_libraries": "pg_cron",
//		"cron.database_name":       "bench",
//	})
//
// It is stopped and its files are removed in t.Cleanup (and by Main's
// shutdown, if the tests end first). Its DSN and NamedDSN give databases on
// it. It always starts a server, also where LEASECRON_TEST_POSTGRES_DSN names
// an existing one: settings such as shared_preload_libraries take a server
// start. A server that cannot start (a setting it refuses, a library that
// is not installed) fails the test with the end of its log.
func StartPostgres(t testing.TB, settings map[string]string) *Server {
	t.Helper()
	reg.mu.Lock()
	inMain := reg.inMain
	reg.mu.Unlock()
	if !inMain {
		t.Fatalf("testenv: StartPostgres needs `func TestMain(m *testing.M) { testenv.Main(m) }` in this package, so the server is stopped when the tests end")
	}
	base, err := baseDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), initTimeout)
	defer cancel()
	started := time.Now()
	name := fmt.Sprintf("postgres-%d", own.Add(1))
	s, err := startPostgresIn(ctx, base, name, settings)
	if err != nil {
		t.Fatalf("testenv: starting PostgreSQL with %v: %v", settings, err)
	}
	s.name = "PostgreSQL (" + name + ")"
	reg.mu.Lock()
	closed := reg.closed
	if !closed {
		reg.managed = append(reg.managed, s)
	}
	reg.mu.Unlock()
	if closed {
		s.Stop(ctx)
		t.Fatal("testenv: testenv.Main has already finished")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("testenv: stopping %s: %v", s.name, err)
		}
		os.RemoveAll(filepath.Join(base, name))
		os.Remove(filepath.Join(base, name+".log"))
	})
	t.Logf("testenv: %s ready at %s after %v", s.name, s.admin.Redacted(), time.Since(started).Round(time.Millisecond))
	return s
}

// PostgresHasLibrary reports whether the PostgreSQL that StartPostgres runs
// has the shared library name (such as "pg_cron") in its library directory
// (Debian: /usr/lib/postgresql/<version>/lib; a source build: <prefix>/lib
// or <prefix>/lib/postgresql), so that a test can say what to install before
// it asks the server to preload it. The error says where it looked, or why
// it could not look.
func PostgresHasLibrary(name string) (bool, error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return false, err
	}
	// The postgres in PATH may be a link to the installed one.
	if real, err := filepath.EvalSymlinks(filepath.Join(binDir, "postgres")); err == nil {
		binDir = filepath.Dir(real)
	}
	prefix := filepath.Dir(binDir)
	dirs := []string{filepath.Join(prefix, "lib"), filepath.Join(prefix, "lib", "postgresql")}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, name+".so")); err == nil {
			return true, nil
		}
	}
	return false, fmt.Errorf("%s.so is in neither %s, the library directories of the PostgreSQL in %s", name, strings.Join(dirs, " nor "), binDir)
}

// own numbers the servers StartPostgres starts, for their directories.
var own atomic.Int64

// postgresBinDir finds the directory holding postgres and initdb: from PATH,
// else the newest Debian/Ubuntu /usr/lib/postgresql/<version>/bin.
func postgresBinDir() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("postgres"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(debian, func(a, b string) int { // newest version first
		va, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(a)), 64)
		vb, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(b)), 64)
		return int(vb*1000 - va*1000)
	})
	for _, d := range append(dirs, debian...) {
		if isExecutable(filepath.Join(d, "postgres")) && isExecutable(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (postgres, initdb) not found in PATH nor /usr/lib/postgresql/*/bin; %s", installHint)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// postgresCredential returns whom to run PostgreSQL as: nil (ourselves)
// unless we are root, which PostgreSQL refuses; then the postgres user, or
// nobody.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
		}
	}
	return nil, errors.New("PostgreSQL refuses to run as root, and there is no postgres or nobody user to run it as")
}

// openPostgres opens a pool for a postgres://user:pass@host:port/db?params URL.
func openPostgres(u *url.URL) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	return stdlib.OpenDB(*cfg), nil
}
