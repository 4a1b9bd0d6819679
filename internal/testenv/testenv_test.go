package testenv_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/leasecron/leasecron/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type widget struct {
	ID   uint
	Name string
}

// open opens a testenv DSN with gorm. The product has its own DSN parser;
// this is just enough for these tests.
func open(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse %q: %v", dsn, err)
	}
	var dialector gorm.Dialector
	switch u.Scheme {
	case "sqlite":
		dialector = sqlite.Open(u.Path)
	case "mysql":
		cfg := gomysql.NewConfig()
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
		cfg.Net, cfg.Addr = "tcp", u.Host
		cfg.DBName = strings.TrimPrefix(u.Path, "/")
		cfg.ParseTime = true
		dialector = mysql.Open(cfg.FormatDSN())
	case "postgres":
		dialector = postgres.Open(dsn)
	default:
		t.Fatalf("unexpected DSN scheme in %q", dsn)
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

func TestDSN(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn1, dsn2 := testenv.DSN(t, dialect), testenv.DSN(t, dialect)
			if dsn1 == dsn2 {
				t.Fatalf("two DSN calls returned the same DSN %q", dsn1)
			}
			for _, dsn := range []string{dsn1, dsn2} {
				if !strings.HasPrefix(dsn, dialect+"://") {
					t.Errorf("DSN %q does not start with %s://", dsn, dialect)
				}
			}
			db1, db2 := open(t, dsn1), open(t, dsn2)

			for i, db := range []*gorm.DB{db1, db2} {
				tables, err := db.Migrator().GetTables()
				if err != nil {
					t.Fatalf("db%d: listing tables: %v", i+1, err)
				}
				if len(tables) != 0 {
					t.Fatalf("db%d is not empty: tables %v", i+1, tables)
				}
			}

			if err := db1.AutoMigrate(&widget{}); err != nil {
				t.Fatalf("db1: migrate: %v", err)
			}
			if err := db1.Create(&widget{Name: "sprocket"}).Error; err != nil {
				t.Fatalf("db1: insert: %v", err)
			}
			var got widget
			if err := db1.First(&got).Error; err != nil || got.Name != "sprocket" {
				t.Fatalf("db1: read back %+v, %v", got, err)
			}
			if db2.Migrator().HasTable(&widget{}) {
				t.Fatalf("table created in %s is visible in %s: databases are not distinct", dsn1, dsn2)
			}
			if err := db2.AutoMigrate(&widget{}); err != nil {
				t.Fatalf("db2: migrate: %v", err)
			}
			var n int64
			if err := db2.Model(&widget{}).Count(&n).Error; err != nil || n != 0 {
				t.Fatalf("db2: count = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestServerRestart stops each server and starts it again on the same port
// and data dir, as outage tests do.
func TestServerRestart(t *testing.T) {
	for _, tc := range []struct {
		dialect string
		server  func(testing.TB) *testenv.Server
	}{
		{"mysql", testenv.MySQLServer},
		{"postgres", testenv.PostgresServer},
	} {
		t.Run(tc.dialect, func(t *testing.T) {
			srv := tc.server(t)
			if !srv.Managed() {
				t.Skipf("%s server comes from an env override; testenv cannot stop it", tc.dialect)
			}
			db := open(t, srv.DSN(t))
			if err := db.AutoMigrate(&widget{}); err != nil {
				t.Fatal(err)
			}
			if err := db.Create(&widget{Name: "before"}).Error; err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			if err := srv.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			sqlDB, _ := db.DB()
			pingCtx, pingCancel := context.WithTimeout(ctx, 5*time.Second)
			defer pingCancel()
			if err := sqlDB.PingContext(pingCtx); err == nil {
				t.Fatal("ping succeeded while the server was stopped")
			}

			start := time.Now()
			if err := srv.Start(ctx); err != nil {
				t.Fatalf("Start: %v", err)
			}
			t.Logf("restarted in %v", time.Since(start).Round(time.Millisecond))
			var got widget
			if err := db.First(&got).Error; err != nil || got.Name != "before" {
				t.Fatalf("after restart: read %+v, %v", got, err)
			}
		})
	}
}

// TestStoppedServerIsRestartedAtCleanup: a test that leaves its server
// stopped does not break the tests after it.
func TestStoppedServerIsRestartedAtCleanup(t *testing.T) {
	t.Run("leave stopped", func(t *testing.T) {
		srv := testenv.MySQLServer(t)
		if !srv.Managed() {
			t.Skip("MariaDB server comes from an env override; testenv cannot stop it")
		}
		if err := srv.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	db := open(t, testenv.DSN(t, "mysql"))
	if err := db.Exec("SELECT 1").Error; err != nil {
		t.Fatalf("server not usable after a test left it stopped: %v", err)
	}
}

// TestStartPostgres: a server of the test's own, with a setting of its own,
// apart from the shared one, and a database of a chosen name on it.
func TestStartPostgres(t *testing.T) {
	srv := testenv.StartPostgres(t, map[string]string{"max_connections": "42"})
	if !srv.Managed() {
		t.Fatal("a server StartPostgres started is not managed")
	}
	if srv.AdminDSN() == testenv.PostgresServer(t).AdminDSN() {
		t.Fatalf("StartPostgres returned the shared server %s", srv.AdminDSN())
	}
	dsn := srv.NamedDSN(t, "chosen_name")
	if !strings.Contains(dsn, "/chosen_name?") {
		t.Fatalf("NamedDSN = %s, want the database chosen_name", dsn)
	}
	db := open(t, dsn)
	var maxConn, db1 string
	if err := db.Raw("SHOW max_connections").Scan(&maxConn).Error; err != nil || maxConn != "42" {
		t.Fatalf("max_connections = %q, %v; want 42", maxConn, err)
	}
	if err := db.Raw("SELECT current_database()").Scan(&db1).Error; err != nil || db1 != "chosen_name" {
		t.Fatalf("current_database() = %q, %v; want chosen_name", db1, err)
	}
}

func TestPostgresHasLibrary(t *testing.T) {
	if ok, err := testenv.PostgresHasLibrary("plpgsql"); !ok {
		t.Errorf("PostgresHasLibrary(plpgsql) = false, %v; every PostgreSQL has it", err)
	}
	if ok, err := testenv.PostgresHasLibrary("no_such_library"); ok || err == nil || !strings.Contains(err.Error(), "no_such_library.so") {
		t.Errorf("PostgresHasLibrary(no_such_library) = %v, %v; want false and an error naming the file", ok, err)
	}
}
