// Package testdb opens a test's database by its DSN, for the tests' own
// reads and writes beside the process under test. It is apart from testenv
// because package model's own tests use testenv, and model must not be
// imported by what model's tests import.
package testdb

import (
	"context"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/model"
)

// Open opens the database raw names, waiting up to 10 s for it, and closes
// it at the test's cleanup.
func Open(t testing.TB, raw string) *gorm.DB {
	t.Helper()
	dsn, err := model.ParseDSN(raw)
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
