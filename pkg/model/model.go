// Package model holds leasecron's database schema and the code that opens,
// migrates and inspects it.
//
// The four statistics tables keep the names and columns of the application
// leasecron replaces, so an existing database is adopted as it is: migrations
// create what is missing and add the unique key on date, but never rewrite a
// column or a row. job_runs is the slot ledger (unique on job and slot) and
// leader_terms holds the current leadership term per election scope: the
// fence every leader transaction checks under a shared lock on its row just
// before it commits.
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

// Stat is one of the four daily statistics tables.
type Stat struct {
	// Table is the table's name.
	Table string
	// CountColumn is its count column.
	CountColumn string
	// model is the gorm model used to create the table.
	model any
}

// Contribute is a row of the contribute table.
type Contribute struct {
	ID               int64 `gorm:"primaryKey;autoIncrement"`
	Date             Date  `gorm:"uniqueIndex:uk_contribute_date"`
	ContributeCounts *int  `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (Contribute) TableName() string { return "contribute" }

// VisitStatistics is a row of the visit_statistics table.
type VisitStatistics struct {
	ID    int64 `gorm:"primaryKey;autoIncrement"`
	Date  Date  `gorm:"uniqueIndex:uk_visit_statistics_date"`
	Times *int  `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (VisitStatistics) TableName() string { return "visit_statistics" }

// LikeStatistics is a row of the like_statistics table.
type LikeStatistics struct {
	ID    int64 `gorm:"primaryKey;autoIncrement"`
	Date  Date  `gorm:"uniqueIndex:uk_like_statistics_date"`
	Times *int  `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (LikeStatistics) TableName() string { return "like_statistics" }

// CommentStatistics is a row of the comment_statistics table.
type CommentStatistics struct {
	ID    int64 `gorm:"primaryKey;autoIncrement"`
	Date  Date  `gorm:"uniqueIndex:uk_comment_statistics_date"`
	Times *int  `gorm:"default:0"`
}

// TableName implements gorm's tabler.
func (CommentStatistics) TableName() string { return "comment_statistics" }

// Stats lists the four statistics tables in a fixed order.
func Stats() []Stat {
	return []Stat{
		{Table: "contribute", CountColumn: "contribute_counts", model: &Contribute{}},
		{Table: "visit_statistics", CountColumn: "times", model: &VisitStatistics{}},
		{Table: "like_statistics", CountColumn: "times", model: &LikeStatistics{}},
		{Table: "comment_statistics", CountColumn: "times", model: &CommentStatistics{}},
	}
}

// Run statuses in job_runs.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// JobRun is one slot of one job in the ledger.
type JobRun struct {
	ID         int64     `gorm:"primaryKey;autoIncrement"`
	Job        string    `gorm:"size:64;not null;uniqueIndex:uk_job_runs_job_slot,priority:1"`
	Slot       time.Time `gorm:"not null;uniqueIndex:uk_job_runs_job_slot,priority:2"`
	Status     string    `gorm:"size:16;not null;index"`
	Holder     string    `gorm:"size:255;not null"`
	Fence      int64     `gorm:"not null"`
	Attempts   int       `gorm:"not null;default:0"`
	StartedAt  *time.Time
	FinishedAt *time.Time
	Error      string `gorm:"size:1024"`
}

// TableName implements gorm's tabler.
func (JobRun) TableName() string { return "job_runs" }

// LeaderTerm is the current leadership term of one election scope.
type LeaderTerm struct {
	Scope     string `gorm:"primaryKey;size:191"`
	Term      int64  `gorm:"not null;default:0"`
	Holder    string `gorm:"size:255;not null;default:''"`
	StartedAt *time.Time
}

// TableName implements gorm's tabler.
func (LeaderTerm) TableName() string { return "leader_terms" }
