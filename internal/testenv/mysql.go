package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// mariadbOptions tune MariaDB for tests: little memory, no fsync per commit
// (committed data still survives a server crash, not an OS crash), no
// native AIO (often unavailable in containers), utf8mb4 like a production
// install. They are used for both mariadb-install-db and mariadbd.
var mariadbOptions = []string{
	"--innodb-buffer-pool-size=32M",
	"--innodb-log-file-size=16M",
	"--innodb-flush-log-at-trx-commit=2",
	"--innodb-doublewrite=0",
	"--innodb-use-native-aio=0",
	"--character-set-server=utf8mb4",
}

// startMariaDB initialises a data dir under base and starts mariadbd on it.
func startMariaDB(ctx context.Context, base string) (*Server, error) {
	mariadbd, err := findBinary("mariadbd", "/usr/sbin/mariadbd", "/usr/libexec/mariadbd")
	if err != nil {
		return nil, err
	}
	installDB, err := findBinary("mariadb-install-db", "/usr/bin/mariadb-install-db")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "mariadb")
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(base, "mariadb.log")
	// Its own temp dir: the server's temporary tables must not share /tmp
	// with other servers' bootstraps or with tmp cleaners.
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	var asUser []string
	if os.Geteuid() == 0 {
		asUser = []string{"--user=root"} // mariadbd refuses root unless told so
	}

	// --auth-root-authentication-method=normal: root@localhost/127.0.0.1
	// without password; --skip-name-resolve: grants by IP, as used below.
	install := []string{"--no-defaults", "--datadir=" + data, "--tmpdir=" + tmp,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}
	install = append(append(install, asUser...), mariadbOptions...)
	if err := run(ctx, installDB, install, dir, nil, logPath); err != nil {
		return nil, fmt.Errorf("initialising MariaDB data dir: %w", err)
	}

	// TLS is on, not required: only users created with REQUIRE SSL (see
	// Server.User) must use it.
	tls, err := writeServerTLS(dir, nil)
	if err != nil {
		return nil, err
	}

	return startOnFreePort(ctx, func(port int) *Server {
		args := []string{"--no-defaults", "--datadir=" + data, "--tmpdir=" + tmp,
			"--socket=" + filepath.Join(dir, "mariadbd.sock"),
			"--pid-file=" + filepath.Join(dir, "mariadbd.pid"),
			"--port=" + strconv.Itoa(port), "--bind-address=" + serverHost, "--skip-name-resolve",
			"--ssl-ca=" + tls.caFile, "--ssl-cert=" + tls.certFile, "--ssl-key=" + tls.keyFile}
		args = append(append(args, asUser...), mariadbOptions...)
		return &Server{
			dialect: "mysql",
			name:    "MariaDB",
			admin: &url.URL{Scheme: "mysql", User: url.User("root"),
				Host: net.JoinHostPort(serverHost, strconv.Itoa(port)), Path: "/mysql"},
			caFile:     tls.caFile,
			bin:        mariadbd,
			args:       args,
			dir:        dir,
			logPath:    logPath,
			stopSignal: syscall.SIGTERM,
		}
	})
}

// openMySQL opens a pool for a mysql://user:pass@host:port/db?params URL.
func openMySQL(u *url.URL) (*sql.DB, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "3306")
	}
	dsn := "tcp(" + host + ")/"
	if u.RawQuery != "" {
		dsn += "?" + u.RawQuery
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(connector), nil
}

// dropMySQLDatabase kills the connections still using the database (whose
// locks would block DROP DATABASE), then drops it.
func dropMySQLDatabase(ctx context.Context, db *sql.DB, name string) error {
	ids, err := mysqlSessions(ctx, db, "DB = ?", name)
	if err != nil {
		return err
	}
	for _, id := range ids {
		db.ExecContext(ctx, fmt.Sprintf("KILL %d", id)) // it may be gone already
	}
	_, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`")
	return err
}

// mysqlSessions lists the ids of the sessions, other than db's own, that
// match a condition on information_schema.PROCESSLIST.
func mysqlSessions(ctx context.Context, db *sql.DB, where string, arg any) ([]int64, error) {
	rows, err := db.QueryContext(ctx,
		"SELECT ID FROM information_schema.PROCESSLIST WHERE "+where+" AND ID <> CONNECTION_ID()", arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
