package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a MariaDB or PostgreSQL server that tests get databases on:
// either one started by this package (managed) or an existing one named by
// LEASECRON_TEST_MYSQL_DSN / LEASECRON_TEST_POSTGRES_DSN (external).
// Only managed servers can be stopped and started.
type Server struct {
	dialect string   // "mysql" or "postgres"
	name    string   // for messages
	admin   *url.URL // admin DSN, URL form
	env     string   // external servers: the env var naming it; "" if managed
	caFile  string   // managed servers: the CA that signed the server's TLS certificate

	// Managed servers only: how to run it. The port is part of args, so
	// Start brings the server back on the same port and data dir.
	bin        string
	args       []string
	dir        string // working dir of the process
	cred       *syscall.Credential
	logPath    string
	stopSignal syscall.Signal

	mu   sync.Mutex
	proc *proc   // the running server, nil when stopped
	db   *sql.DB // admin connection pool, opened lazily, closed by Stop
}

// AdminDSN returns the server's admin DSN in URL form, e.g.
// mysql://root@127.0.0.1:PORT/mysql.
func (s *Server) AdminDSN() string { return s.admin.String() }

// CAFile returns the PEM file of the CA that signed the server's TLS
// certificate. Managed servers have TLS on (not required: see User), with a
// certificate for 127.0.0.1 alone, the address they listen on; "localhost"
// reaches the same server under a name the certificate does not hold. It
// fails the test for a server named by an env override, whose TLS testenv
// does not know.
func (s *Server) CAFile(t testing.TB) string {
	t.Helper()
	if s.caFile == "" {
		t.Fatalf("testenv: %s: TLS tests need a server testenv starts itself (unset %s)", s.name, s.env)
	}
	return s.caFile
}

// Managed reports whether this package started the server, i.e. whether Stop
// and Start work. It is false for servers named by an env override.
func (s *Server) Managed() bool { return s.env == "" }

// DSN returns the DSN of a fresh, empty database on s, dropped in t.Cleanup
// (after starting s again if a test left it stopped).
func (s *Server) DSN(t testing.TB) string {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	return s.NamedDSN(t, "lc_"+hex.EncodeToString(b[:]))
}

// NamedDSN is DSN for a database of the given name, for a server setting
// that names a database (PostgreSQL's cron.database_name, say). The name
// must be a plain identifier that no other test on s uses at the same time.
func (s *Server) NamedDSN(t testing.TB, name string) string {
	t.Helper()
	for _, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			t.Fatalf("testenv: database name %q: use lower-case letters, digits and '_'", name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := s.createDatabase(ctx, name); err != nil {
		t.Fatalf("testenv: creating database %s on %s (%s): %v", name, s.name, s.admin.Redacted(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		err := s.ensureRunning(ctx)
		if err == nil {
			err = s.dropDatabase(ctx, name)
		}
		if err != nil {
			t.Errorf("testenv: dropping database %s on %s: %v", name, s.name, err)
		}
	})
	u := *s.admin
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}

// ServerFor is MySQLServer or PostgresServer, by dialect ("mysql" or
// "postgres").
func ServerFor(t testing.TB, dialect string) *Server {
	t.Helper()
	if dialect != "mysql" && dialect != "postgres" {
		t.Fatalf("testenv: ServerFor(%q): want mysql or postgres", dialect)
	}
	return serverWithRestart(t, dialect)
}

// ReplaceFile gives the file at path its new content at once (written
// aside, then renamed over it), as the kubelet updates a mounted Secret:
// a reader sees the old content or the new, never half of it.
func ReplaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// UserOptions say what kind of user Server.User creates.
type UserOptions struct {
	// RequireTLS makes the server refuse the user any connection without
	// TLS (MariaDB REQUIRE SSL; PostgreSQL a pg_hba hostnossl reject rule),
	// and leaves sslmode out of the DSN, so the client's TLS settings decide.
	RequireTLS bool
}

// User creates a user with a random password and every privilege on the
// database of dsn (a DSN from s.DSN), dropped in t.Cleanup, and returns dsn
// with that user and password. Unlike the admin, whom PostgreSQL trusts, the
// user's password is checked on every connection, so a changed password
// (SetPassword) shuts out whoever still has the old one.
func (s *Server) User(t testing.TB, dsn string, o UserOptions) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("testenv: User: DSN is not a URL: %v", err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	var b [8]byte
	rand.Read(b[:])
	name := "lc_u_" + hex.EncodeToString(b[:])
	rand.Read(b[:])
	password := hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := s.createUser(ctx, dbName, name, password, o.RequireTLS); err != nil {
		t.Fatalf("testenv: creating user %s on %s: %v", name, s.name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		err := s.ensureRunning(ctx)
		if err == nil {
			err = s.dropUser(ctx, dbName, name)
		}
		if err != nil {
			t.Errorf("testenv: dropping user %s on %s: %v", name, s.name, err)
		}
	})
	u.User = url.UserPassword(name, password)
	if o.RequireTLS {
		q := u.Query()
		q.Del("sslmode")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func (s *Server) createUser(ctx context.Context, dbName, name, password string, requireTLS bool) error {
	db, err := s.adminDB()
	if err != nil {
		return err
	}
	if s.dialect == "mysql" {
		create := "CREATE USER '" + name + "'@'%' IDENTIFIED BY '" + password + "'"
		if requireTLS {
			create += " REQUIRE SSL"
		}
		return execAll(ctx, db, create, "GRANT ALL PRIVILEGES ON `"+dbName+"`.* TO '"+name+"'@'%'")
	}
	groups := []string{pgPasswordGroup}
	if requireTLS {
		groups = append(groups, pgTLSGroup)
	}
	for _, g := range groups {
		// Tests create users side by side: the loser of a race to create
		// the group sees a unique violation rather than duplicate_object.
		if _, err := db.ExecContext(ctx, `DO $$ BEGIN CREATE ROLE `+g+` NOLOGIN;
			EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`); err != nil {
			return err
		}
	}
	if err := execAll(ctx, db, `CREATE ROLE "`+name+`" LOGIN PASSWORD '`+password+`' IN ROLE `+strings.Join(groups, ", ")); err != nil {
		return err
	}
	// Since PostgreSQL 15 only the database's owner may create tables in
	// its public schema.
	return s.execIn(ctx, dbName, `GRANT ALL ON SCHEMA public TO "`+name+`"`)
}

func (s *Server) dropUser(ctx context.Context, dbName, name string) error {
	if _, err := s.KillSessions(ctx, name); err != nil {
		return err
	}
	db, err := s.adminDB()
	if err != nil {
		return err
	}
	if s.dialect == "mysql" {
		return execAll(ctx, db, "DROP USER IF EXISTS '"+name+"'@'%'")
	}
	// The user owns what it created in the database (the tables of a
	// migration): DROP ROLE needs them gone.
	if err := s.execIn(ctx, dbName, `DROP OWNED BY "`+name+`"`); err != nil {
		return err
	}
	return execAll(ctx, db, `DROP ROLE IF EXISTS "`+name+`"`)
}

// SetPassword changes the password of a user that User created.
func (s *Server) SetPassword(ctx context.Context, user, password string) error {
	db, err := s.adminDB()
	if err != nil {
		return err
	}
	if s.dialect == "mysql" {
		return execAll(ctx, db, "ALTER USER '"+user+"'@'%' IDENTIFIED BY '"+password+"'")
	}
	return execAll(ctx, db, `ALTER ROLE "`+user+`" PASSWORD '`+password+`'`)
}

// KillSessions ends every session of user on the server (MariaDB KILL,
// PostgreSQL pg_terminate_backend), as a server restart or a failover does
// to a client's pooled connections, and returns how many it ended.
func (s *Server) KillSessions(ctx context.Context, user string) (int, error) {
	db, err := s.adminDB()
	if err != nil {
		return 0, err
	}
	if s.dialect == "postgres" {
		var n int
		err := db.QueryRowContext(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1", user).Scan(&n)
		return n, err
	}
	ids, err := mysqlSessions(ctx, db, "USER = ?", user)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		db.ExecContext(ctx, fmt.Sprintf("KILL %d", id)) // it may be gone already
	}
	return len(ids), nil
}

// execIn runs statements as the admin in the database dbName (PostgreSQL
// statements that act on the current database only).
func (s *Server) execIn(ctx context.Context, dbName string, stmts ...string) error {
	u := *s.admin
	u.Path, u.RawPath = "/"+dbName, ""
	db, err := openPostgres(&u)
	if err != nil {
		return err
	}
	defer db.Close()
	return execAll(ctx, db, stmts...)
}

func execAll(ctx context.Context, db *sql.DB, stmts ...string) error {
	for _, st := range stmts {
		if _, err := db.ExecContext(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// Stop shuts the server down (SIGTERM for MariaDB, SIGINT, i.e. fast
// shutdown, for PostgreSQL) and waits for it to exit; if ctx ends first, the
// server is killed and Stop returns an error. Stopping a stopped server is a
// no-op. Other tests using the server at the same time will see errors.
func (s *Server) Stop(ctx context.Context) error {
	if !s.Managed() {
		return s.notManaged("Stop")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
	p := s.proc
	s.proc = nil
	if p == nil {
		return nil
	}
	return p.stop(ctx, s.stopSignal)
}

// Start starts a stopped server again with the same port and data dir and
// waits until it accepts connections. Starting a running server is a no-op.
func (s *Server) Start(ctx context.Context) error {
	if !s.Managed() {
		return s.notManaged("Start")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(ctx)
}

func (s *Server) notManaged(op string) error {
	return fmt.Errorf("testenv: cannot %s %s: it was not started by testenv (unset %s to let tests start their own server)", op, s.name, s.env)
}

func (s *Server) ensureRunning(ctx context.Context) error {
	if !s.Managed() {
		return nil
	}
	return s.Start(ctx)
}

func (s *Server) startLocked(ctx context.Context) error {
	if s.proc != nil && !s.proc.exited() {
		return nil
	}
	s.proc = nil
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
	logStart := fileSize(s.logPath)
	p, err := spawn(s.bin, s.args, s.dir, s.cred, s.logPath)
	if err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	db, err := s.waitReady(ctx, p)
	if err != nil {
		p.stop(context.Background(), syscall.SIGKILL)
		return fmt.Errorf("%s on %s: %w%s", s.name, s.admin.Host, err, logTail(s.logPath, logStart))
	}
	s.proc, s.db = p, db
	return nil
}

// waitReady polls until the server accepts connections, returning the admin pool.
func (s *Server) waitReady(ctx context.Context, p *proc) (*sql.DB, error) {
	db, err := s.openAdmin()
	if err != nil {
		return nil, err
	}
	for {
		pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = db.PingContext(pingCtx)
		cancel()
		if err == nil {
			return db, nil
		}
		select {
		case <-p.done:
			db.Close()
			return nil, fmt.Errorf("server exited before accepting connections (%v)", p.err)
		case <-ctx.Done():
			db.Close()
			return nil, fmt.Errorf("server not accepting connections: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (s *Server) adminDB() (*sql.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		db, err := s.openAdmin()
		if err != nil {
			return nil, err
		}
		s.db = db
	}
	return s.db, nil
}

func (s *Server) openAdmin() (*sql.DB, error) {
	if s.dialect == "mysql" {
		return openMySQL(s.admin)
	}
	return openPostgres(s.admin)
}

func (s *Server) createDatabase(ctx context.Context, name string) error {
	db, err := s.adminDB()
	if err != nil {
		return err
	}
	if s.dialect == "mysql" {
		_, err = db.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4")
	} else {
		_, err = db.ExecContext(ctx, `CREATE DATABASE "`+name+`"`)
	}
	return err
}

func (s *Server) dropDatabase(ctx context.Context, name string) error {
	db, err := s.adminDB()
	if err != nil {
		return err
	}
	if s.dialect == "mysql" {
		return dropMySQLDatabase(ctx, db, name)
	}
	_, err = db.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`)
	return err
}

// newExternalServer wraps the existing server named by env var envVar.
func newExternalServer(dialect, envVar, dsn string) (*Server, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envVar, err)
	}
	want := map[string]string{"mysql": "mysql", "postgres": "postgres", "postgresql": "postgres"}[u.Scheme]
	if want != dialect || u.Host == "" {
		return nil, fmt.Errorf("%s=%s: want a URL like %s://user@host:port/dbname", envVar, u.Redacted(), dialect)
	}
	u.Scheme = dialect
	s := &Server{dialect: dialect, name: dialect + " server from " + envVar, admin: u, env: envVar}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	db, err := s.adminDB()
	if err == nil {
		err = db.PingContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s=%s: %w", envVar, u.Redacted(), err)
	}
	return s, nil
}

// findBinary returns name from PATH, else the first executable candidate.
func findBinary(name string, candidates ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, c := range candidates {
		if isExecutable(c) {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH nor at %s; %s", name, strings.Join(candidates, ", "), installHint)
}

// freePort returns a currently free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proc is a child process that dies with the test binary (see sysProcAttr).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // the Wait result, set before done is closed
}

// spawn starts bin with its output appended to logPath.
func spawn(bin string, args []string, dir string, cred *syscall.Credential, logPath string) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr(cred)
	p := &proc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that started the
		// child exits, not the process (go.dev/issue/27505), so keep this
		// goroutine, and with it the thread, until the child is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// run runs bin to completion (e.g. initdb), failing with its log output.
func run(ctx context.Context, bin string, args []string, dir string, cred *syscall.Credential, logPath string) error {
	logStart := fileSize(logPath)
	p, err := spawn(bin, args, dir, cred, logPath)
	if err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop(context.Background(), syscall.SIGKILL)
		return fmt.Errorf("%s: %w%s", bin, ctx.Err(), logTail(logPath, logStart))
	}
	if p.err != nil {
		return fmt.Errorf("%s: %w%s", bin, p.err, logTail(logPath, logStart))
	}
	return nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the process to exit, killing it when ctx ends.
func (p *proc) stop(ctx context.Context, sig syscall.Signal) error {
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("pid %d did not exit after %v (%w); killed it", p.cmd.Process.Pid, sig, ctx.Err())
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the end of what was written to path after offset from,
// formatted to be appended to an error message.
func logTail(path string, from int64) string {
	const max = 4 << 10
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if size := fileSize(path); size-from > max {
		from = size - max
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, from, max))
	if len(b) == 0 {
		return ""
	}
	return "\n--- " + path + " ---\n" + strings.TrimSpace(string(b))
}

// startOnFreePort builds a managed server for a free port and starts it,
// retrying with another port if one was taken in between.
func startOnFreePort(ctx context.Context, newServer func(port int) *Server) (*Server, error) {
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := newServer(port)
		err = s.Start(ctx)
		if err == nil {
			return s, nil
		}
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
}
