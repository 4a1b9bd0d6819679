package model

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

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
// Several replicas may start at once: they migrate one after the other,
// each holding a lock in the database while it checks and changes the
// schema (see withMigrationLock), so none trips over another's CREATE.
func Migrate(ctx context.Context, db *gorm.DB) error {
	return withMigrationLock(db.WithContext(ctx), migrateOnce)
}

// migrationLock names the lock migrations hold: an advisory lock key on
// PostgreSQL, a lock name on MySQL.
const (
	migrationLockKey  = 0x6c65617365637201 // "leasecr" and a 1
	migrationLockName = "leasecron.migrate"
	migrationLockWait = time.Minute
)

// withMigrationLock runs fn while this process holds the migration lock:
// on SQLite a write (immediate) transaction, as SQLite's DDL is
// transactional; on PostgreSQL and MySQL a session lock on one pinned
// connection (MySQL's DDL commits as it goes, so no transaction could hold
// it), released when fn returns.
func withMigrationLock(db *gorm.DB, fn func(*gorm.DB) error) error {
	switch db.Dialector.Name() {
	case SQLite:
		return db.Transaction(fn)
	case Postgres, MySQL:
	default:
		return fn(db)
	}
	return db.Connection(func(pinned *gorm.DB) error {
		// A new session, so that each statement below starts afresh
		// (Connection hands over a DB whose statement would accumulate).
		conn := pinned.Session(&gorm.Session{})
		unlock := conn.WithContext(context.WithoutCancel(conn.Statement.Context))
		if conn.Dialector.Name() == Postgres {
			if err := conn.Exec("SELECT pg_advisory_lock(?)", migrationLockKey).Error; err != nil {
				return fmt.Errorf("take the migration lock: %w", err)
			}
			defer unlock.Exec("SELECT pg_advisory_unlock(?)", migrationLockKey)
			return fn(conn)
		}
		var got sql.NullInt64
		if err := conn.Raw("SELECT GET_LOCK(?, ?)", migrationLockName, int(migrationLockWait/time.Second)).Scan(&got).Error; err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
		if got.Int64 != 1 {
			return fmt.Errorf("take the migration lock: another process has held MySQL lock %q for over %s (SELECT IS_USED_LOCK('%s') names its connection)", migrationLockName, migrationLockWait, migrationLockName)
		}
		defer unlock.Exec("SELECT RELEASE_LOCK(?)", migrationLockName)
		return fn(conn)
	})
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
