package model

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// DuplicateDatesError reports that a statistics table holds more than one row
// for some dates, so its unique key on date cannot be added.
type DuplicateDatesError struct {
	Table string
	Dates int64
}

func (e *DuplicateDatesError) Error() string {
	return fmt.Sprintf("table %s holds %d dates with more than one row, so the unique key on date cannot be added: "+
		"run 'leasecron verify' to list them and 'leasecron dedupe' to merge them (a dry run; add --apply to change anything), then migrate again", e.Table, e.Dates)
}

// Migrate creates the tables leasecron needs and adopts existing ones: it adds
// missing columns and indexes, and never alters or rewrites what is there.
// Several replicas may migrate at once; a loser of a creation race retries.
func Migrate(ctx context.Context, db *gorm.DB) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = migrateOnce(db.WithContext(ctx))
		var dup *DuplicateDatesError
		if err == nil || errors.As(err, &dup) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func migrateOnce(db *gorm.DB) error {
	models := []any{&JobRun{}, &LeaderTerm{}}
	for _, s := range Stats() {
		models = append(models, s.model)
	}
	m := db.Migrator()
	for _, mod := range models {
		stmt := &gorm.Statement{DB: db}
		if err := stmt.Parse(mod); err != nil {
			return fmt.Errorf("parse model %T: %w", mod, err)
		}
		table := stmt.Schema.Table
		if !m.HasTable(mod) {
			if err := m.CreateTable(mod); err != nil {
				return fmt.Errorf("create table %s: %w", table, err)
			}
			continue
		}
		for _, f := range stmt.Schema.Fields {
			if f.DBName == "" || m.HasColumn(mod, f.DBName) {
				continue
			}
			if err := m.AddColumn(mod, f.DBName); err != nil {
				return fmt.Errorf("add column %s.%s: %w", table, f.DBName, err)
			}
		}
		for _, idx := range stmt.Schema.ParseIndexes() {
			if m.HasIndex(mod, idx.Name) {
				continue
			}
			if idx.Class == "UNIQUE" && table != "job_runs" && table != "leader_terms" {
				n, err := countDuplicateDates(db, table)
				if err != nil {
					return err
				}
				if n > 0 {
					return &DuplicateDatesError{Table: table, Dates: n}
				}
			}
			if err := m.CreateIndex(mod, idx.Name); err != nil {
				return fmt.Errorf("create index %s on %s: %w", idx.Name, table, err)
			}
		}
	}
	return nil
}

func countDuplicateDates(db *gorm.DB, table string) (int64, error) {
	var n int64
	err := db.Raw("SELECT COUNT(*) FROM (SELECT date FROM " + quote(db, table) +
		" WHERE date IS NOT NULL GROUP BY date HAVING COUNT(*) > 1) d").Scan(&n).Error
	if err != nil {
		return 0, fmt.Errorf("count duplicate dates in %s: %w", table, err)
	}
	return n, nil
}

func quote(db *gorm.DB, name string) string {
	var b strings.Builder
	db.Dialector.QuoteTo(&b, name)
	return b.String()
}
