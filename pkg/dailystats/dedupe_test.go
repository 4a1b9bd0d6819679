package dailystats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/model"
)

// TestDedupeLegacyDuplicates: the old lock-file setup wrote six rows per date.
// A dry run changes nothing; --apply keeps the lowest id per date with the
// removed rows' counts added, after which migrate adds the unique keys and
// verify is clean.
func TestDedupeLegacyDuplicates(t *testing.T) {
	const dates, copies = 40, 6
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := open(t, d)
			legacySchema(t, db, d)
			first := model.Date{Year: 2020, Month: 1, Day: 1}
			var want = map[string]map[model.Date]int64{}
			for _, s := range Stats() {
				want[s.Table] = map[model.Date]int64{}
				var vals []string
				for i := 0; i < dates; i++ {
					day := first.AddDays(i)
					for c := 0; c < copies; c++ {
						count := "NULL"
						if c%3 != 0 { // some NULL counts, as the old application left them
							count = fmt.Sprint(i + c)
							want[s.Table][day] += int64(i + c)
						}
						vals = append(vals, fmt.Sprintf("('%s', %s)", day, count))
					}
				}
				vals = append(vals, "(NULL, 5)", "(NULL, 5)") // undated rows are not duplicates of anything
				if err := db.Exec("INSERT INTO " + s.Table + " (date, " + s.CountColumn + ") VALUES " + strings.Join(vals, ", ")).Error; err != nil {
					t.Fatal(err)
				}
			}
			var dup *DuplicateDatesError
			if err := migrateAll(ctx, db); !errors.As(err, &dup) || !strings.Contains(err.Error(), "leasecron dedupe") {
				t.Fatalf("migrate before dedupe = %v, want a DuplicateDatesError naming dedupe", err)
			}

			plan, err := Dedupe(ctx, db, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range plan {
				if len(r.Merges) != dates || r.Rows() != dates*(copies-1) {
					t.Fatalf("dry run of %s plans %d dates, %d rows; want %d, %d", r.Table, len(r.Merges), r.Rows(), dates, dates*(copies-1))
				}
			}
			var total int64
			if err := db.Raw("SELECT COUNT(*) FROM like_statistics").Scan(&total).Error; err != nil || total != dates*copies+2 {
				t.Fatalf("dry run changed the table: %d rows (%v)", total, err)
			}

			applied, err := Dedupe(ctx, db, true)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range applied {
				if r.Rows() != plan[i].Rows() {
					t.Fatalf("%s: applied %d removals, planned %d", r.Table, r.Rows(), plan[i].Rows())
				}
			}
			for _, s := range Stats() {
				var rows []struct {
					ID    int64
					Date  model.Date
					Count *int64
				}
				if err := db.Raw("SELECT id, date, " + s.CountColumn + " AS count FROM " + s.Table + " WHERE date IS NOT NULL ORDER BY date").Scan(&rows).Error; err != nil {
					t.Fatal(err)
				}
				if len(rows) != dates {
					t.Fatalf("%s has %d dated rows after dedupe, want %d", s.Table, len(rows), dates)
				}
				for i, r := range rows {
					if r.Count == nil || *r.Count != want[s.Table][r.Date] {
						t.Fatalf("%s %s: count %v, want the sum %d", s.Table, r.Date, r.Count, want[s.Table][r.Date])
					}
					if keep := plan[0].Merges[i].Keep; s.Table == plan[0].Table && r.ID != keep {
						t.Fatalf("%s %s kept id %d, want the lowest id %d", s.Table, r.Date, r.ID, keep)
					}
				}
				var undated int64
				if err := db.Raw("SELECT COUNT(*) FROM " + s.Table + " WHERE date IS NULL").Scan(&undated).Error; err != nil || undated != 2 {
					t.Fatalf("%s: undated rows %d, want 2 left alone (%v)", s.Table, undated, err)
				}
			}

			if err := migrateAll(ctx, db); err != nil {
				t.Fatalf("migrate after dedupe: %v", err)
			}
			reports, err := Verify(ctx, db, first, first.AddDays(dates-1))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range reports {
				if !r.OK() {
					t.Errorf("verify %s after dedupe: %+v", r.Table, r)
				}
			}
			if again, err := Dedupe(ctx, db, true); err != nil || again[0].Rows() != 0 {
				t.Fatalf("second dedupe = %+v, %v; want nothing to do", again, err)
			}
		})
	}
}
