package dailystats

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func open(t *testing.T, dialect string) *gorm.DB {
	t.Helper()
	dsn, err := model.ParseDSN(testenv.DSN(t, dialect))
	if err != nil {
		t.Fatal(err)
	}
	db, err := model.Open(context.Background(), dsn, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = model.Close(db) })
	return db
}

// legacySchema creates the four tables as the old application did: nullable
// date and counts, no unique key. On MariaDB it is the real fixture.
func legacySchema(t *testing.T, db *gorm.DB, dialect string) {
	t.Helper()
	var stmts []string
	switch dialect {
	case "mysql":
		stmts = testenv.SQLStatements(t, "testdata/legacy-schema-mariadb.sql")
	default:
		id := "id INTEGER PRIMARY KEY AUTOINCREMENT"
		if dialect == "postgres" {
			id = "id SERIAL PRIMARY KEY"
		}
		for _, s := range Stats() {
			stmts = append(stmts, "CREATE TABLE "+s.Table+" ("+id+", date DATE DEFAULT NULL, "+s.CountColumn+" INTEGER DEFAULT NULL)")
		}
	}
	for _, s := range stmts {
		if err := db.Exec(s).Error; err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestMigrateFreshAndIdempotent(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := open(t, d)
			ctx := context.Background()
			for i := 0; i < 2; i++ {
				if err := migrateAll(ctx, db); err != nil {
					t.Fatalf("migrate #%d: %v", i+1, err)
				}
			}
			for _, s := range Stats() {
				if !db.Migrator().HasIndex(s.model, "uk_"+s.Table+"_date") {
					t.Errorf("%s lacks its unique key on date", s.Table)
				}
			}
			if !db.Migrator().HasIndex(&jobs.JobRun{}, "uk_job_runs_job_slot") {
				t.Error("job_runs lacks its unique key")
			}
		})
	}
}

// Existing tables are adopted: the key is added, nothing is rewritten.
func TestMigrateAdoptsLegacyTables(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := open(t, d)
			legacySchema(t, db, d)
			if err := db.Exec("INSERT INTO visit_statistics (date, times) VALUES ('2020-05-01', 7), (NULL, NULL)").Error; err != nil {
				t.Fatal(err)
			}
			if err := migrateAll(context.Background(), db); err != nil {
				t.Fatalf("migrate legacy: %v", err)
			}
			if !db.Migrator().HasIndex(&VisitStatistics{}, "uk_visit_statistics_date") {
				t.Fatal("unique key not added")
			}
			var times int
			if err := db.Raw("SELECT times FROM visit_statistics WHERE date = '2020-05-01'").Scan(&times).Error; err != nil || times != 7 {
				t.Fatalf("existing row changed: times=%d (%v)", times, err)
			}
			if d == "mysql" {
				var table, ddl string
				if err := db.Raw("SHOW CREATE TABLE visit_statistics").Row().Scan(&table, &ddl); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(ddl, "`id` int(11) NOT NULL AUTO_INCREMENT") {
					t.Errorf("id column was rewritten:\n%s", ddl)
				}
			}
		})
	}
}

func TestMigrateRefusesDuplicateDates(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := open(t, d)
			legacySchema(t, db, d)
			for i := 0; i < 6; i++ {
				if err := db.Exec("INSERT INTO like_statistics (date, times) VALUES ('2021-01-01', 0), ('2021-01-02', 0)").Error; err != nil {
					t.Fatal(err)
				}
			}
			err := migrateAll(context.Background(), db)
			var dup *DuplicateDatesError
			if !errors.As(err, &dup) || dup.Table != "like_statistics" || dup.Dates != 2 {
				t.Fatalf("Migrate = %v, want a DuplicateDatesError for 2 dates in like_statistics", err)
			}
			if !strings.Contains(err.Error(), "leasecron verify") {
				t.Errorf("message does not name verify: %v", err)
			}
			reports, err := Verify(context.Background(), db, model.Date{Year: 2021, Month: 1, Day: 1}, model.Date{Year: 2021, Month: 1, Day: 3})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range reports {
				if r.Table != "like_statistics" {
					continue
				}
				if len(r.Duplicates) != 2 || r.Duplicates[0].Count != 6 || len(r.Missing) != 1 || r.Missing[0] != (model.Date{Year: 2021, Month: 1, Day: 3}) {
					t.Fatalf("verify like_statistics = %+v", r)
				}
			}
		})
	}
}

// Replicas that start together migrate one after the other: none fails on
// a table or index that another is creating at that moment.
func TestConcurrentMigrations(t *testing.T) {
	const processes, rounds = 6, 3
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			for round := 0; round < rounds; round++ {
				dsn, err := model.ParseDSN(testenv.DSN(t, d)) // a fresh, empty database
				if err != nil {
					t.Fatal(err)
				}
				start, errs := make(chan struct{}), make(chan error, processes)
				for i := 0; i < processes; i++ {
					db, err := model.Open(ctx, dsn, 10*time.Second, nil)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = model.Close(db) })
					go func() {
						<-start
						errs <- migrateAll(ctx, db)
					}()
				}
				close(start)
				for i := 0; i < processes; i++ {
					if err := <-errs; err != nil {
						t.Errorf("round %d: a concurrent migrate failed: %v", round+1, err)
					}
				}
			}
		})
	}
}

// migrateAll migrates the ledger and the four tables, as `leasecron migrate`
// does for the daily-stats job.
func migrateAll(ctx context.Context, db *gorm.DB) error {
	return jobs.Migrate(ctx, db, []jobs.Definition{{Name: Name, Work: Job{}}})
}

// 00:00:50 in Shanghai on the 24th is 16:00:50 UTC on the 23rd: run through
// the engine, the rows carry the 24th on every dialect, whatever the
// server's zone, and a second run of the slot writes nothing.
func TestWritesSlotDateInZone(t *testing.T) {
	sh, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := open(t, d)
			sched, err := jobs.ParseSchedule(DefaultSchedule, sh)
			if err != nil {
				t.Fatal(err)
			}
			def := jobs.Definition{Name: Name, Schedule: sched, Work: Job{}}
			if err := jobs.Migrate(ctx, db, []jobs.Definition{def}); err != nil {
				t.Fatal(err)
			}
			s, err := jobs.New(db, "test", []jobs.Definition{def}, jobs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			slot := time.Date(2026, 11, 24, 0, 0, 50, 0, sh)
			for i, want := range []jobs.Outcome{jobs.Succeeded, jobs.Skipped} {
				if out, err := s.RunSlot(ctx, jobs.Fence{}, Name, slot, time.Now().Add(time.Minute)); err != nil || out != want {
					t.Fatalf("run %d = %v, %v; want %v", i+1, out, err, want)
				}
			}
			want := model.Date{Year: 2026, Month: 11, Day: 24}
			for _, s := range Stats() {
				var dates []model.Date
				if err := db.Table(s.Table).Pluck("date", &dates).Error; err != nil {
					t.Fatal(err)
				}
				if len(dates) != 1 || dates[0] != want {
					t.Errorf("%s dates = %v, want [%s]", s.Table, dates, want)
				}
				var count int
				if err := db.Table(s.Table).Select(s.CountColumn).Where("date = ?", want).Scan(&count).Error; err != nil || count != 0 {
					t.Errorf("%s.%s = %d (%v), want 0", s.Table, s.CountColumn, count, err)
				}
			}
		})
	}
}
