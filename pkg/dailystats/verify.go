package dailystats

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/model"
)

// DateCount is a date and how many rows a table holds for it.
type DateCount struct {
	Date  model.Date
	Count int64
}

// TableReport is what Verify found in one statistics table.
type TableReport struct {
	Table      string
	Duplicates []DateCount  // dates with more than one row
	Missing    []model.Date // dates in the range with no row
}

// OK reports whether the table has neither duplicates nor gaps.
func (r TableReport) OK() bool { return len(r.Duplicates) == 0 && len(r.Missing) == 0 }

// DateSpan returns the earliest and latest date held by any statistics
// table; ok is false when all of them are empty.
func DateSpan(ctx context.Context, db *gorm.DB) (first, last model.Date, ok bool, err error) {
	for _, s := range Stats() {
		var row struct{ Lo, Hi model.Date }
		err := db.WithContext(ctx).Raw("SELECT MIN(date) AS lo, MAX(date) AS hi FROM " + model.Quote(db, s.Table)).Scan(&row).Error
		if err != nil {
			return model.Date{}, model.Date{}, false, fmt.Errorf("read date span of %s: %w", s.Table, err)
		}
		if row.Lo.IsZero() {
			continue
		}
		if !ok || row.Lo.Before(first) {
			first = row.Lo
		}
		if !ok || last.Before(row.Hi) {
			last = row.Hi
		}
		ok = true
	}
	return first, last, ok, nil
}

// Verify reports, for every statistics table, the dates holding more than one
// row and the dates in [from, to] holding none.
func Verify(ctx context.Context, db *gorm.DB, from, to model.Date) ([]TableReport, error) {
	db = db.WithContext(ctx)
	var reports []TableReport
	for _, s := range Stats() {
		r := TableReport{Table: s.Table}
		var dups []struct {
			Date model.Date
			N    int64
		}
		err := db.Raw("SELECT date, COUNT(*) AS n FROM " + model.Quote(db, s.Table) +
			" WHERE date IS NOT NULL GROUP BY date HAVING COUNT(*) > 1 ORDER BY date").Scan(&dups).Error
		if err != nil {
			return nil, fmt.Errorf("find duplicate dates in %s: %w", s.Table, err)
		}
		for _, d := range dups {
			r.Duplicates = append(r.Duplicates, DateCount{Date: d.Date, Count: d.N})
		}
		var present []model.Date
		err = db.Raw("SELECT DISTINCT date FROM "+model.Quote(db, s.Table)+" WHERE date >= ? AND date <= ?", from, to).
			Scan(&present).Error
		if err != nil {
			return nil, fmt.Errorf("read dates of %s: %w", s.Table, err)
		}
		have := make(map[model.Date]bool, len(present))
		for _, d := range present {
			have[d] = true
		}
		for d := from; !to.Before(d); d = d.AddDays(1) {
			if !have[d] {
				r.Missing = append(r.Missing, d)
			}
		}
		reports = append(reports, r)
	}
	return reports, nil
}
