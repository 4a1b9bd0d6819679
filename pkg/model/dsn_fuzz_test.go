package model

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// FuzzParseDSN: any string either parses or is rejected, never a panic, and
// a parsed DSN has a dialect.
func FuzzParseDSN(f *testing.F) {
	for _, seed := range []string{
		"sqlite://leasecron.db", "sqlite:///var/lib/x.db", "mysql://u:p@h:3306/db?charset=utf8mb4",
		"mysql://u:p@tcp(h:3306)/db", "postgres://u:p@h:5432/db?sslmode=disable", "postgresql://h/db",
		"oracle://x", "leasecron.db", "mysql://u:p@[::1/db", "mysql://", "sqlite://", "postgres://u:p@/db",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		d, err := ParseDSN(raw)
		if err != nil {
			return
		}
		if d.Dialect != SQLite && d.Dialect != MySQL && d.Dialect != Postgres {
			t.Fatalf("ParseDSN(%q) has dialect %q", raw, d.Dialect)
		}
	})
}

// FuzzDSNRedactsPassword: whatever the password, in every accepted place a
// credential can sit (the URL's user, PostgreSQL's password, sslpassword and
// sslkey parameters, the go-sql-driver form), neither the printed DSN, nor
// the error for a DSN refused, nor a scrubbed driver error contains it,
// decoded or as written.
func FuzzDSNRedactsPassword(f *testing.F) {
	for _, seed := range []string{"s3cret", "p@ss:w/rd?#", "%41%42", "xxxxx-not", "a&b=c;d e", "pass word+"} {
		f.Add(seed)
	}
	formsWith := func(pw string) []string {
		user := url.UserPassword("app", pw).String()
		q := url.QueryEscape(pw)
		return []string{
			"mysql://" + user + "@db:3306/stats",
			"mysql://app:" + pw + "@tcp(db:3306)/stats",
			"postgres://" + user + "@db:5432/stats",
			"postgres://app@db/stats?sslmode=disable&password=" + q,
			"postgresql://app@db/stats?sslpassword=" + q + "&sslmode=disable",
			"postgres://app@db/stats?sslmode=disable&sslkey=" + q,
		}
	}
	f.Fuzz(func(t *testing.T, pw string) {
		user := url.UserPassword("app", pw).String()
		q := url.QueryEscape(pw)
		forms := formsWith(pw)
		// The password may also be ordinary DSN text: the redacted forms
		// themselves ("password=xxxxx", the host, …) may contain it.
		for _, text := range formsWith("xxxxx") {
			if len(pw) < 6 || strings.Contains(text, pw) || strings.Contains(text, q) {
				return
			}
		}
		leaks := func(s string) bool {
			return strings.Contains(s, pw) || strings.Contains(s, q) || strings.Contains(s, user[len("app:"):])
		}
		for _, raw := range forms {
			d, err := ParseDSN(raw)
			if err != nil {
				if leaks(err.Error()) {
					t.Fatalf("the error for %q shows the password: %v", raw, err)
				}
				continue
			}
			if leaks(d.String()) {
				t.Fatalf("DSN %q prints as %q", raw, d)
			}
			echo := errors.New("driver: cannot connect to " + raw + ": access denied for " + pw)
			if err := d.Scrub(echo); leaks(err.Error()) {
				t.Fatalf("Scrub left the password in %q", err)
			}
		}
	})
}
