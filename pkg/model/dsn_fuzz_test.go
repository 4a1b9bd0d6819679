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

// FuzzDSNRedactsPassword: whatever the password, neither the printed DSN nor
// a scrubbed driver error contains it.
func FuzzDSNRedactsPassword(f *testing.F) {
	for _, seed := range []string{"s3cret", "p@ss:w/rd?#", "%41%42", "xxxxx-not"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 6 || strings.Contains("mysql://app:xxxxx@db:3306/stats postgres://app:xxxxx@db:5432/stats", pw) {
			return // the password would also be ordinary DSN text
		}
		user := url.UserPassword("app", pw).String()
		for _, raw := range []string{"mysql://" + user + "@db:3306/stats", "postgres://" + user + "@db:5432/stats"} {
			d, err := ParseDSN(raw)
			if err != nil {
				if strings.Contains(err.Error(), pw) {
					t.Fatalf("the error for %q shows the password: %v", raw, err)
				}
				continue
			}
			if strings.Contains(d.String(), pw) {
				t.Fatalf("DSN %q prints as %q", raw, d)
			}
			if err := d.Scrub(errors.New("driver: access denied for " + pw)); strings.Contains(err.Error(), pw) {
				t.Fatalf("Scrub left the password in %q", err)
			}
		}
	})
}
