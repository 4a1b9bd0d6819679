package main

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
)

// TestDatabaseCAFileBadInput: a CA file that cannot be used, or one given
// for SQLite, ends with exit 2 and one line naming --database-ca-file,
// before anything is written (no SQLite file appears), from the flag and
// from LEASECRON_DATABASE_CA_FILE alike; no password is shown.
func TestDatabaseCAFileBadInput(t *testing.T) {
	dir := t.TempDir()
	ca, err := testenv.NewCA("a-ca")
	if err != nil {
		t.Fatal(err)
	}
	good := ca.WriteFile(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("-----BEGIN NOTHING-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "leasecron.db")
	const server = "mysql://app:s3cret@127.0.0.1:1/app"
	for _, tc := range []struct {
		name string
		dsn  string
		ca   string
		env  bool
		want string
	}{
		{"sqlite", "sqlite://" + db, good, false, "leasecron: --database-ca-file: a CA file verifies a database server's certificate, and SQLite has no server"},
		{"missing file", server, filepath.Join(dir, "missing.pem"), false, "leasecron: --database-ca-file: cannot read the CA file " + filepath.Join(dir, "missing.pem") + ": no such file or directory"},
		{"not PEM", server, notPEM, false, "leasecron: --database-ca-file: CA file " + notPEM + " holds no PEM certificate"},
		{"not PEM from env", "postgres://app:s3cret@127.0.0.1:1/app", notPEM, true, "leasecron: --database-ca-file: CA file " + notPEM + " holds no PEM certificate"},
		{"contradicting sslmode", "postgres://app:s3cret@127.0.0.1:1/app?sslmode=disable", good, false, "leasecron: --database-ca-file: the DSN's sslmode=disable allows a connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, "migrate", "--database-dsn", tc.dsn, "--database-connect-timeout", "0s")
			cmd.Env = os.Environ()
			if tc.env {
				cmd.Env = append(cmd.Env, "LEASECRON_DATABASE_CA_FILE="+tc.ca)
			} else {
				cmd.Args = append(cmd.Args, "--database-ca-file", tc.ca)
			}
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit code %d (%v), want 2:\n%s", code, err, out)
			}
			lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Fatalf("output:\n%s\nwant one line starting %q", out, tc.want)
			}
			if strings.Contains(string(out), "s3cret") {
				t.Fatalf("the password is shown: %s", out)
			}
			if _, err := os.Stat(db); !os.IsNotExist(err) {
				t.Fatalf("a database file was written: %v", err)
			}
		})
	}
}

// TestTLSDatabaseWithCAFile: `once` and `status` reach a server that admits
// the user only over TLS with --database-ca-file, and the slot's ledger row
// comes back; with another CA the command exits 1 saying the certificate
// is not trusted, without the password.
func TestTLSDatabaseWithCAFile(t *testing.T) {
	for _, dialect := range []string{"mysql", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			srv := testenv.ServerFor(t, dialect)
			dsn := srv.User(t, srv.DSN(t), testenv.UserOptions{RequireTLS: true})
			password, _ := mustURL(t, dsn).User.Password()
			ca := srv.CAFile(t)
			wrong, err := testenv.NewCA("another-ca")
			if err != nil {
				t.Fatal(err)
			}
			wrongCA := wrong.WriteFile(t, t.TempDir())
			run := func(caFile string, args ...string) (string, int) {
				cmd := exec.Command(binary, append(args, "--database-dsn", dsn, "--database-ca-file", caFile,
					"--database-connect-timeout", "0s", "--timezone", "UTC", "--log-level", "error")...)
				out, _ := cmd.CombinedOutput()
				return string(out), cmd.ProcessState.ExitCode()
			}
			if out, code := run(ca, "once", "daily-stats"); code != 0 {
				t.Fatalf("once with the server's CA: exit %d\n%s", code, out)
			}
			out, code := run(ca, "status")
			if code != 0 || !strings.Contains(out, "succeeded") {
				t.Fatalf("status with the server's CA: exit %d, want the succeeded slot\n%s", code, out)
			}
			out, code = run(wrongCA, "status")
			if code != 1 || !strings.Contains(out, "certificate signed by unknown authority") {
				t.Fatalf("status with another CA: exit %d, want 1 and the certificate's error\n%s", code, out)
			}
			if strings.Contains(out, password) {
				t.Fatalf("the password is shown:\n%s", out)
			}
		})
	}
}

// TestDSNFileRotationWithoutRestart: a controller running a per-second job
// on a DSN file (over TLS with a CA file) keeps running slots when the
// user's password is rotated as a Secret is: the password changes on the
// server, the file is rewritten, and the server ends every session of the
// user. The same process reconnects with the file's new content; no
// password is logged.
func TestDSNFileRotationWithoutRestart(t *testing.T) {
	for _, dialect := range []string{"mysql", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			srv := testenv.ServerFor(t, dialect)
			admin := srv.DSN(t)
			dsn := srv.User(t, admin, testenv.UserOptions{RequireTLS: true})
			u := mustURL(t, dsn)
			user := u.User.Username()
			oldPassword, _ := u.User.Password()
			dir := t.TempDir()
			file := filepath.Join(dir, "dsn")
			testenv.ReplaceFile(t, file, dsn+"\n")

			f := newFleet(t)
			p := f.Start("p1", "run", "--mode", "filelock", "--lock-file", filepath.Join(dir, "leasecron.lock"),
				"--database-dsn-file", file, "--database-ca-file", srv.CAFile(t),
				"--schedule", "daily-stats=* * * * * *", "--timezone", "UTC",
				"--http-addr", "127.0.0.1:0", "--log-format", "json")
			f.Await(60*time.Second, "a slot before the rotation", func(e testenv.Event) bool { return e.Msg == "slot succeeded" })

			const newPassword = "rotated0Secret0pw"
			ctx := context.Background()
			if err := srv.SetPassword(ctx, user, newPassword); err != nil {
				t.Fatal(err)
			}
			u.User = url.UserPassword(user, newPassword)
			testenv.ReplaceFile(t, file, u.String()+"\n")
			if _, err := srv.KillSessions(ctx, user); err != nil {
				t.Fatal(err)
			}
			rotated := time.Now().UTC()

			// Poll the ledger (as the admin) for slots well after the rotation.
			deadline := time.Now().Add(60 * time.Second)
			for {
				var after int
				for _, s := range ledgerSlots(t, admin, "daily-stats") {
					if s.After(rotated.Add(time.Second)) {
						after++
					}
				}
				if after >= 3 {
					break
				}
				select {
				case <-p.Done:
					t.Fatalf("the controller exited (code %d) after the rotation", p.Cmd.ProcessState.ExitCode())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d slots succeeded after the rotation within 60s, want 3", after)
				}
				time.Sleep(200 * time.Millisecond)
			}
			logs := f.Logs()
			// Both pools (the jobs' and the leader's own) switch; one line says so.
			if n := strings.Count(logs, "database DSN file changed: new connections use its new content"); n != 1 {
				t.Errorf("%d log lines for the new DSN file content, want 1", n)
			}
			for _, pw := range []string{oldPassword, newPassword} {
				if strings.Contains(logs, pw) {
					t.Fatalf("a password is logged:\n%s", logs)
				}
			}
			f.Terminate()
		})
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
