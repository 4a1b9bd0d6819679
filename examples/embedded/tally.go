package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

// tally is the service's own work in the database. It is a jobs.TxJob (its
// writes commit in the transaction that marks the slot succeeded) and a
// jobs.Migrator (jobs.Migrate creates its tables).
type tally struct{}

// counter is the one row of tallies; slotRow is one row of tally_slots per
// slot counted. tally_slots has no unique key on slot on purpose: the work is
// not idempotent, and exactly once comes from the ledger alone.
type counter struct {
	ID int64 `gorm:"primaryKey;autoIncrement:false"`
	N  int64 `gorm:"not null"`
}

type slotRow struct {
	ID   int64     `gorm:"primaryKey"`
	Slot time.Time `gorm:"not null"`
}

func (counter) TableName() string { return "tallies" }
func (slotRow) TableName() string { return "tally_slots" }

// Migrate implements jobs.Migrator; it runs under the migration lock.
func (tally) Migrate(ctx context.Context, db *gorm.DB) error {
	db = db.WithContext(ctx)
	if err := model.EnsureTables(db, []any{&counter{}, &slotRow{}}, nil); err != nil {
		return fmt.Errorf("tally tables: %w", err)
	}
	if err := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&counter{ID: 1}).Error; err != nil {
		return fmt.Errorf("tally counter row: %w", err)
	}
	return nil
}

// RunTx implements jobs.TxJob. It must not commit or roll back tx.
func (tally) RunTx(ctx context.Context, tx *gorm.DB, slot jobs.Slot) error {
	tx = tx.WithContext(ctx)
	res := tx.Exec("UPDATE tallies SET n = n + 1 WHERE id = 1")
	if res.Error != nil {
		return fmt.Errorf("count %s: %w", slot.Key, res.Error)
	}
	if res.RowsAffected != 1 {
		return errors.New("tallies has no row 1: the migration did not run")
	}
	if err := tx.Create(&slotRow{Slot: slot.Time}).Error; err != nil { // the slot's own time, never now
		return fmt.Errorf("record %s: %w", slot.Key, err)
	}
	return nil
}
