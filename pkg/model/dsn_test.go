package model

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDSN(t *testing.T) {
	for _, tc := range []struct {
		in, dialect, redacted string
	}{
		{"sqlite://leasecron.db", SQLite, "sqlite://leasecron.db"},
		{"sqlite:///var/lib/lc/x.db", SQLite, "sqlite:///var/lib/lc/x.db"},
		{"mysql://app:s3cret@db:3306/stats?charset=utf8mb4", MySQL, "mysql://app:xxxxx@db:3306/stats"},
		{"mysql://app@db/stats", MySQL, "mysql://app@db:3306/stats"},
		{"mysql://app:s3cret@tcp(db:3307)/stats", MySQL, "mysql://app:xxxxx@db:3307/stats"},
		{"postgres://app:s3cret@db:5432/stats?sslmode=disable", Postgres, "postgres://app:xxxxx@db:5432/stats?sslmode=disable"},
		{"postgresql://app@db/stats", Postgres, "postgres://app@db/stats"},
		{"postgres://app@db/app?sslmode=disable&password=s3cret", Postgres, "postgres://app@db/app?sslmode=disable&password=xxxxx"},
		{"postgres://app:s3cret@db/app?password=s3cret", Postgres, "postgres://app:xxxxx@db/app?password=xxxxx"},
		{"postgres://app@db/app?sslmode=disable&sslpassword=s3cret&sslkey=/k.pem", Postgres, "postgres://app@db/app?sslmode=disable&sslpassword=xxxxx&sslkey=xxxxx"},
		{"postgres://app@db/app?sslmode=disable&PassWord=s3cret", Postgres, "postgres://app@db/app?sslmode=disable&PassWord=xxxxx"},
		{"mysql://app:s%33cret@db/stats", MySQL, "mysql://app:xxxxx@db:3306/stats"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			d, err := ParseDSN(tc.in)
			if err != nil {
				t.Fatalf("ParseDSN: %v", err)
			}
			if d.Dialect != tc.dialect || d.String() != tc.redacted {
				t.Fatalf("got %s %q, want %s %q", d.Dialect, d.String(), tc.dialect, tc.redacted)
			}
			if strings.Contains(d.String(), "s3cret") {
				t.Fatalf("String() leaks the password: %s", d)
			}
		})
	}
}

func TestParseDSNMySQLDriverOptions(t *testing.T) {
	d, err := ParseDSN("mysql://u:p@h:1/db?charset=utf8mb4")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"parseTime=true", "charset=utf8mb4", "tcp(h:1)", "/db"} {
		if !strings.Contains(d.driver, want) {
			t.Errorf("driver DSN %q lacks %q", d.driver, want)
		}
	}
}

func TestParseDSNRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "no scheme"},
		{"leasecron.db", "no scheme"},
		{"oracle://u:p@h/db", `scheme "oracle" is not supported`},
		{"sqlite://", "no file path"},
		{"sqlite://x.db?cache=shared", "takes no options"},
		{"mysql://u:s3cret@/db", "no host"},
		{"mysql://u:s3cret@h:3306/", "no database name"},
		{"mysql://u:s3cret@h:3306/db?parseTime=maybe", "option is not valid"},
		{"mysql://u:s3cret@h:notaport/db", "not a valid URL"},
		{"postgres://u:s3cret@/db", "no host"},
		{"postgres://u:s3cret@h:5432/db?sslmode=sometimes", "not valid"},
		{"postgres://u@h:5432/db?sslmode=sometimes&password=s3cret", "not valid"},
		{"postgres://u@h:5432/db?sslmode=sometimes&sslpassword=s3cret", "not valid"},
		{"postgres://host=h password=s3cret", "not a valid URL"},
		{"password=s3cret host=h", "no scheme"},
		{"mysql://u:s3cret@tcp(h:3306/db", "not valid"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseDSN(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseDSN(%q) = %v, want error containing %q", tc.in, err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestScrub(t *testing.T) {
	d, err := ParseDSN("mysql://u:hunter2@h/db")
	if err != nil {
		t.Fatal(err)
	}
	got := d.Scrub(errors.New("access denied for u:hunter2"))
	if strings.Contains(got.Error(), "hunter2") || !strings.Contains(got.Error(), "xxxxx") {
		t.Fatalf("Scrub = %v", got)
	}
	if d.Scrub(nil) != nil {
		t.Fatal("Scrub(nil) != nil")
	}
}

// TestScrubEveryCredential: a driver error that echoes the DSN, in any of
// the forms it was written in, loses every credential.
func TestScrubEveryCredential(t *testing.T) {
	for _, raw := range []string{
		"postgres://app@db/app?sslmode=disable&password=s3cret",
		"postgres://app:s3cret@db/app",
		"postgres://app@db/app?sslmode=disable&sslpassword=s3cret",
		"postgres://app@db/app?sslmode=disable&password=s%33cret",
		"mysql://app:s%33cret@db/stats",
		"mysql://app:s3cret@tcp(db:3306)/stats",
	} {
		t.Run(raw, func(t *testing.T) {
			d, err := ParseDSN(raw)
			if err != nil {
				t.Fatal(err)
			}
			got := d.Scrub(errors.New("cannot connect to " + raw + " as s3cret"))
			if strings.Contains(got.Error(), "s3cret") || strings.Contains(got.Error(), "s%33cret") || !strings.Contains(got.Error(), "xxxxx") {
				t.Fatalf("Scrub = %v", got)
			}
			if strings.Contains(d.String(), "s3cret") || strings.Contains(d.String(), "s%33cret") {
				t.Fatalf("String() = %s", d)
			}
		})
	}
}

func TestDateScan(t *testing.T) {
	var d Date
	for _, src := range []any{"2026-11-24", []byte("2026-11-24 00:00:00"), mustTime(t)} {
		if err := d.Scan(src); err != nil || d.String() != "2026-11-24" {
			t.Fatalf("Scan(%v) = %v, %v", src, d, err)
		}
	}
	if err := d.Scan(3.5); err == nil {
		t.Fatal("Scan(float) succeeded")
	}
}

func mustTime(t *testing.T) any {
	t.Helper()
	d, err := ParseDate("2026-11-24")
	if err != nil {
		t.Fatal(err)
	}
	return d.In(time.UTC)
}

// TestNoCreateOpensOnlyAnExistingFile: a NoCreate SQLite DSN fails on a
// missing file and leaves nothing behind, and opens a file that exists.
func TestNoCreateOpensOnlyAnExistingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	d, err := ParseDSN("sqlite://" + path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if db, err := Open(ctx, d.NoCreate(), 0, slog.New(slog.DiscardHandler)); err == nil {
		_ = Close(db)
		t.Fatal("NoCreate opened a database file that does not exist")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("NoCreate left %v behind", entries)
	}
	db, err := Open(ctx, d, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Close(db); err != nil {
		t.Fatal(err)
	}
	db, err = Open(ctx, d.NoCreate(), 0, nil)
	if err != nil {
		t.Fatalf("NoCreate cannot open the existing file: %v", err)
	}
	if err := Close(db); err != nil {
		t.Fatal(err)
	}
}

// TestScrubCoversLaterDSNFileContents: once a pool has read a new content of
// the DSN file, every copy of the DSN scrubs its password too, also when the
// content was refused (another database), and the pool keeps the old DSN.
func TestScrubCoversLaterDSNFileContents(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dsn")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("mysql://app:first-pw@db:3306/app")
	d, err := ParseDSNFile(file)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.poolConnector(SessionLimits{}, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fc := c.(*fileConnector)
	start := fc.current()
	write("mysql://app:second-pw@db:3306/app")
	if fc.current() == start {
		t.Fatal("a new password in the file did not give a new connector")
	}
	accepted := fc.current()
	write("mysql://app:third-pw@db:3306/other")
	if fc.current() != accepted {
		t.Fatal("a content naming another database was used")
	}
	msg := d.Scrub(errors.New("first-pw second-pw third-pw")).Error()
	if msg != "xxxxx xxxxx xxxxx" {
		t.Fatalf("Scrub = %q, want every password replaced", msg)
	}
}
