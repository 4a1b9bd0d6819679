package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// startPostgres runs initdb under base and starts postgres on it.
func startPostgres(ctx context.Context, base string) (*Server, error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "postgres") // owned by the server user; also the socket dir
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(base, "postgres.log")
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

	return startOnFreePort(ctx, func(port int) *Server {
		// fsync etc. off: data survives a server crash, not an OS crash.
		args := []string{"-D", data, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-k", dir,
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "shared_buffers=32MB"}
		return &Server{
			dialect: "postgres",
			name:    "PostgreSQL",
			admin: &url.URL{Scheme: "postgres", User: url.User("postgres"),
				Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/postgres",
				RawQuery: "sslmode=disable"},
			bin:        filepath.Join(binDir, "postgres"),
			args:       args,
			dir:        dir,
			cred:       cred,
			logPath:    logPath,
			stopSignal: syscall.SIGINT, // fast shutdown: disconnect clients, don't wait for them
		}
	})
}

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
