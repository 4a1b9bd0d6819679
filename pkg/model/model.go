// Package model is leasecron's storage layer: the DSN and its dialects,
// opening a database with server-side session limits, TLS verified against
// a CA file (WithCAFile) and a DSN file that new connections re-read, so a
// rotated Secret needs no restart (ParseDSNFile), the migration lock, and
// the calendar Date type. It knows no job: the ledger's tables belong to
// package jobs, a kind's tables to its own package.
//
// Calendar dates travel as 'YYYY-MM-DD' text and are read back by their
// year, month and day alone, so no server, driver or process time zone can
// move a date. The dialect comes from the DSN's scheme (sqlite, mysql,
// postgres); see ParseDSN.
package model

import (
	"database/sql/driver"
	"fmt"
	"time"
)

// Date is a calendar date without a time zone.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// DateOf returns the calendar date of t in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// ParseDate parses YYYY-MM-DD.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, fmt.Errorf("date %q is not YYYY-MM-DD", s)
	}
	return DateOf(t), nil
}

// String formats the date as YYYY-MM-DD.
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day) }

// In returns midnight of the date in loc (or the first instant of the date,
// where midnight does not exist).
func (d Date) In(loc *time.Location) time.Time {
	return time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, loc)
}

// AddDays returns the date n days later.
func (d Date) AddDays(n int) Date {
	return DateOf(time.Date(d.Year, d.Month, d.Day+n, 0, 0, 0, 0, time.UTC))
}

// Before reports whether d is earlier than o.
func (d Date) Before(o Date) bool { return d.In(time.UTC).Before(o.In(time.UTC)) }

// IsZero reports whether d is the zero Date.
func (d Date) IsZero() bool { return d == Date{} }

// Value implements driver.Valuer.
func (d Date) Value() (driver.Value, error) { return d.String(), nil }

// Scan implements sql.Scanner. It accepts what each driver returns for a
// DATE column and keeps only the wall-clock date.
func (d *Date) Scan(src any) error {
	switch v := src.(type) {
	case time.Time:
		*d = DateOf(v)
		return nil
	case string:
		return d.scanText(v)
	case []byte:
		return d.scanText(string(v))
	case nil:
		*d = Date{}
		return nil
	default:
		return fmt.Errorf("cannot scan %T into a date", src)
	}
}

func (d *Date) scanText(s string) error {
	if len(s) < len(time.DateOnly) {
		return fmt.Errorf("cannot scan %q into a date", s)
	}
	p, err := ParseDate(s[:len(time.DateOnly)])
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// GormDataType tells gorm the column type.
func (Date) GormDataType() string { return "date" }
