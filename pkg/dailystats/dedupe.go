package dailystats

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/model"
)

// Merge is what Dedupe does to one date of one table: it keeps the row with
// the lowest id and adds the counts of the others to it, then deletes them.
type Merge struct {
	Date    model.Date
	Keep    int64   // id of the row kept
	Remove  []int64 // ids of the rows removed
	Before  *int64  // the kept row's count before (nil: NULL)
	After   *int64  // its count after: Before plus the removed rows' counts (NULL counts as nothing)
	Removed int64   // the sum of the removed rows' counts
}

// DedupeReport lists the merges of one statistics table.
type DedupeReport struct {
	Table  string
	Merges []Merge
}

// Rows returns how many rows the report removes.
func (r DedupeReport) Rows() int {
	n := 0
	for _, m := range r.Merges {
		n += len(m.Remove)
	}
	return n
}

// dedupeBatch bounds the ids in one UPDATE ... CASE or DELETE ... IN.
const dedupeBatch = 500

// Dedupe finds the dates that hold more than one row in each statistics
// table (the bug of the lock-file setup leasecron replaces) and plans to keep
// one row per date, the lowest id, with the counts of the others added to it
// so no count is lost. With apply it carries the plan out, all tables in one
// transaction; without, it changes nothing. Rows without a date are left
// alone.
func Dedupe(ctx context.Context, db *gorm.DB, apply bool) ([]DedupeReport, error) {
	var reports []DedupeReport
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, s := range Stats() {
			r, err := planDedupe(tx, s)
			if err != nil {
				return err
			}
			if apply {
				if err := applyDedupe(tx, s, r); err != nil {
					return err
				}
			}
			reports = append(reports, r)
		}
		if !apply {
			// Nothing was written; end the transaction without committing.
			return errDryRun
		}
		return nil
	})
	if err != nil && err != errDryRun {
		return nil, err
	}
	return reports, nil
}

var errDryRun = fmt.Errorf("dry run")

func planDedupe(tx *gorm.DB, s Stat) (DedupeReport, error) {
	t, c := model.Quote(tx, s.Table), model.Quote(tx, s.CountColumn)
	var rows []struct {
		ID    int64
		Date  model.Date
		Count *int64
	}
	err := tx.Raw("SELECT id, date, " + c + " AS count FROM " + t + " WHERE date IN (SELECT date FROM " + t +
		" WHERE date IS NOT NULL GROUP BY date HAVING COUNT(*) > 1) ORDER BY date, id").Scan(&rows).Error
	if err != nil {
		return DedupeReport{}, fmt.Errorf("read duplicate dates of %s: %w", s.Table, err)
	}
	r := DedupeReport{Table: s.Table}
	for _, row := range rows {
		if n := len(r.Merges); n == 0 || r.Merges[n-1].Date != row.Date {
			before := row.Count
			r.Merges = append(r.Merges, Merge{Date: row.Date, Keep: row.ID, Before: before, After: before})
			continue
		}
		m := &r.Merges[len(r.Merges)-1]
		m.Remove = append(m.Remove, row.ID)
		if row.Count != nil {
			m.Removed += *row.Count
			sum := *row.Count
			if m.After != nil {
				sum += *m.After
			}
			m.After = &sum
		}
	}
	return r, nil
}

func applyDedupe(tx *gorm.DB, s Stat, r DedupeReport) error {
	t, c := model.Quote(tx, s.Table), model.Quote(tx, s.CountColumn)
	intType := "INTEGER" // PostgreSQL would otherwise type the CASE's parameters as text
	if tx.Dialector.Name() == model.MySQL {
		intType = "SIGNED"
	}
	var changed []Merge
	var remove []int64
	for _, m := range r.Merges {
		if m.Removed != 0 || (m.Before == nil && m.After != nil) {
			changed = append(changed, m)
		}
		remove = append(remove, m.Remove...)
	}
	for len(changed) > 0 {
		batch := changed[:min(dedupeBatch, len(changed))]
		changed = changed[len(batch):]
		var sql strings.Builder
		args := make([]any, 0, 3*len(batch))
		sql.WriteString("UPDATE " + t + " SET " + c + " = CASE id")
		for _, m := range batch {
			sql.WriteString(" WHEN ? THEN CAST(? AS " + intType + ")")
			args = append(args, m.Keep, *m.After)
		}
		sql.WriteString(" END WHERE id IN (?" + strings.Repeat(", ?", len(batch)-1) + ")")
		for _, m := range batch {
			args = append(args, m.Keep)
		}
		if err := tx.Exec(sql.String(), args...).Error; err != nil {
			return fmt.Errorf("add removed counts in %s: %w", s.Table, err)
		}
	}
	for len(remove) > 0 {
		batch := remove[:min(dedupeBatch, len(remove))]
		remove = remove[len(batch):]
		res := tx.Exec("DELETE FROM "+t+" WHERE id IN ?", batch)
		if res.Error != nil {
			return fmt.Errorf("delete duplicate rows of %s: %w", s.Table, res.Error)
		}
		if res.RowsAffected != int64(len(batch)) {
			return fmt.Errorf("delete duplicate rows of %s: %d of %d rows were gone (changed concurrently?): nothing applied", s.Table, res.RowsAffected, len(batch))
		}
	}
	return nil
}
