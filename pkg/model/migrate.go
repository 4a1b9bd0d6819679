package model

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Migrate runs fn while this process holds the database's migration lock,
// so that several replicas starting at once migrate one after the other and
// none trips over another's CREATE (see withMigrationLock). Every migration
// (the ledger's, a kind's tables) goes through it.
func Migrate(ctx context.Context, db *gorm.DB, fn func(db *gorm.DB) error) error {
	return withMigrationLock(db.WithContext(ctx), fn)
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

// EnsureTables creates the tables of models that are missing and adopts
// existing ones: it adds missing columns and indexes, and never alters or
// rewrites what is there. beforeUnique, if set, is called before a unique
// index is added to an existing table, and may refuse (say, because rows
// would break it).
func EnsureTables(db *gorm.DB, models []any, beforeUnique func(db *gorm.DB, table string) error) error {
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
			if idx.Class == "UNIQUE" && beforeUnique != nil {
				if err := beforeUnique(db, table); err != nil {
					return err
				}
			}
			if err := m.CreateIndex(mod, idx.Name); err != nil {
				return fmt.Errorf("create index %s on %s: %w", idx.Name, table, err)
			}
		}
	}
	return nil
}

// Quote quotes a table or column name for db's dialect.
func Quote(db *gorm.DB, name string) string {
	var b strings.Builder
	db.Dialector.QuoteTo(&b, name)
	return b.String()
}
