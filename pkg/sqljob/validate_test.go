package sqljob_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
	"github.com/leasecron/leasecron/pkg/sqljob"
)

// sqlJob is a job spec of the sql kind.
func sqlJob(name string, statements ...string) *spec.ScheduledJob {
	sj := &spec.ScheduledJob{Spec: spec.JobSpec{Schedule: "0 5 * * *", SQL: &spec.SQL{Statements: statements}}}
	sj.Name = name
	return sj
}

// define builds sj's definition through a catalog, as the controller does.
func define(sj *spec.ScheduledJob, dialect string) (jobs.Definition, error) {
	return spec.NewCatalog(sqljob.Kind{}).Definition(sj, spec.Env{Dialect: dialect})
}

// fieldErrors flattens err's joined FieldErrors.
func fieldErrors(t *testing.T, err error) []*spec.FieldError {
	t.Helper()
	var out []*spec.FieldError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *spec.FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("error %q (%T) is not a spec.FieldError", err, err)
		}
		out = append(out, fe)
	}
	if err != nil {
		walk(err)
	}
	return out
}

const known = "@slot, @slot_date, @prev_slot, @job, @key"

// Every statement here is accepted on the dialect: '@' in strings, quoted
// identifiers and comments is text, and so are the operators that contain it.
func TestBuildAccepts(t *testing.T) {
	for _, tc := range []struct {
		dialect, stmt string
	}{
		{"", "UPDATE counters SET n = n + 1"},
		{"", "ALTER TABLE t ADD COLUMN c INT"}, // no dialect: only transaction control is known
		{"sqlite", "INSERT INTO t (day) VALUES (@slot_date)"},
		{"mysql", "INSERT INTO t (day, k) VALUES (@slot_date, @key)"},
		{"postgres", "INSERT INTO t (day, k) VALUES (@slot_date, @key) ON CONFLICT (day) DO NOTHING"},
		{"sqlite", "SELECT 'a@b.c', 'it''s @x', \"col@x\", `col@y`, [col@z] FROM t"},
		{"mysql", "SELECT 'a@b.c', 'it\\'s @x', \"str@x\", `col@y` FROM t"},
		{"postgres", "SELECT 'a@b.c', 'it''s @x', E'it\\'s @x', \"col@x\" FROM t"},
		{"postgres", "SELECT 1 -- @nope; DROP TABLE t\n, 2 /* @nope; /* nested @x */ still comment; */"},
		{"mysql", "SELECT 1 -- @nope\n, 2 # @nope; DROP TABLE t\n, 3 /* @nope; */"},
		{"sqlite", "SELECT 1 -- @nope\n, 2 /* @nope; */"},
		{"postgres", "DO $$ BEGIN PERFORM '@x'; RAISE NOTICE 'a;b @y'; END $$"},
		{"postgres", "SELECT $tag$ it's @x; $$ $tag$, $$@y$$"},
		{"postgres", "SELECT @-5, @ 3, '{1}'::int[] <@ '{1,2}', '{1,2}'::int[] @> '{1}', to_tsvector('a') @@ to_tsquery('a')"},
		{"postgres", "SELECT data ? 'k' FROM t"}, // jsonb's ? is an operator, not a placeholder
		{"mysql", "CREATE TEMPORARY TABLE tmp (x INT)"},
		{"mysql", "CREATE OR REPLACE TEMPORARY TABLE tmp (x INT)"},
		{"mysql", "DROP TEMPORARY TABLE IF EXISTS tmp"},
		{"mysql", "ANALYZE SELECT * FROM t"}, // MariaDB: explains a query
		{"mysql", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"},
		{"postgres", "ALTER TABLE t ADD COLUMN c INT"},
		{"postgres", "TRUNCATE t"},
		{"postgres", "CREATE INDEX i ON t (c)"},
		{"postgres", "CLUSTER t USING i"},
		{"sqlite", "CREATE TABLE t2 (x INT)"},
		{"sqlite", "DROP TABLE t2"},
		{"postgres", "SELECT 1;"},
		{"mysql", "SELECT 1 ;  -- the end"},
		{"sqlite", "SELECT ';'"},
	} {
		if _, err := define(sqlJob("ok", tc.stmt), tc.dialect); err != nil {
			t.Errorf("%s: %q refused: %v", dialectName(tc.dialect), tc.stmt, err)
		}
	}
}

func dialectName(d string) string {
	if d == "" {
		return "no dialect"
	}
	return d
}

// Every statement here is refused on the dialect, with one error that names
// the job and the statement's field and says what is wrong and how to fix it.
func TestBuildRefuses(t *testing.T) {
	for _, tc := range []struct {
		dialect, stmt string
		want          []string // in the message
	}{
		{"postgres", "SELECT @nope", []string{"unknown parameter @nope", known}},
		{"sqlite", "SELECT @Slot", []string{"unknown parameter @Slot", "did you mean @slot?"}},
		{"mysql", "SET @x = 1", []string{"unknown parameter @x", "user variables"}},
		{"mysql", "SELECT @@version", []string{"@@version", "system variable", known}},
		{"mysql", "SELECT @'x'", []string{"user variable"}},
		{"postgres", "SELECT 1 # @nope", []string{"unknown parameter @nope"}}, // # is an operator on PostgreSQL
		{"mysql", "SELECT $$ @nope $$", []string{"unknown parameter @nope"}},  // no dollar quotes on MySQL
		{"mysql", "SELECT 1 --@nope", []string{"unknown parameter @nope"}},    // -- needs a space on MySQL
		{"mysql", "SELECT ?", []string{"? is a placeholder", "named parameters"}},
		{"sqlite", "SELECT :name", []string{":name is a placeholder"}},
		{"postgres", "SELECT $1", []string{"$1 is a placeholder"}},
		{"mysql", "ALTER TABLE t ADD COLUMN c INT", []string{"ALTER commits implicitly on MariaDB/MySQL, so it cannot run in the slot's transaction", "migration"}},
		{"mysql", "/* note */ -- why\n  alter table t add column c int", []string{"ALTER commits implicitly"}},
		{"mysql", "/*!40000 ALTER TABLE t DISABLE KEYS */", []string{"ALTER commits implicitly"}},
		{"mysql", "CREATE TABLE t (x INT)", []string{"CREATE commits implicitly", "CREATE TEMPORARY TABLE"}},
		{"mysql", "DROP TABLE t", []string{"DROP commits implicitly"}},
		{"mysql", "TRUNCATE t", []string{"TRUNCATE commits implicitly", "DELETE FROM"}},
		{"mysql", "RENAME TABLE a TO b", []string{"RENAME commits implicitly"}},
		{"mysql", "GRANT SELECT ON t TO u", []string{"GRANT commits implicitly"}},
		{"mysql", "LOCK TABLES t WRITE", []string{"LOCK TABLES commits implicitly"}},
		{"mysql", "OPTIMIZE TABLE t", []string{"OPTIMIZE commits implicitly"}},
		{"mysql", "ANALYZE TABLE t", []string{"ANALYZE TABLE commits implicitly"}},
		{"mysql", "FLUSH TABLES", []string{"FLUSH commits implicitly"}},
		{"mysql", "SET autocommit = 1", []string{"SET autocommit commits implicitly"}},
		{"mysql", "SET PASSWORD = 'x'", []string{"SET PASSWORD commits implicitly"}},
		{"postgres", "VACUUM", []string{"VACUUM cannot run inside a transaction block on PostgreSQL", "autovacuum"}},
		{"postgres", "vacuum analyze t", []string{"VACUUM cannot run inside a transaction block"}},
		{"postgres", "CREATE INDEX CONCURRENTLY i ON t (c)", []string{"CREATE INDEX CONCURRENTLY cannot run inside a transaction block"}},
		{"postgres", "CREATE UNIQUE INDEX CONCURRENTLY i ON t (c)", []string{"CREATE UNIQUE INDEX CONCURRENTLY"}},
		{"postgres", "DROP INDEX CONCURRENTLY i", []string{"DROP INDEX CONCURRENTLY"}},
		{"postgres", "REINDEX TABLE CONCURRENTLY t", []string{"REINDEX CONCURRENTLY"}},
		{"postgres", "REINDEX DATABASE d", []string{"REINDEX DATABASE"}},
		{"postgres", "CREATE DATABASE d", []string{"CREATE DATABASE"}},
		{"postgres", "ALTER SYSTEM SET work_mem = '1MB'", []string{"ALTER SYSTEM"}},
		{"postgres", "CLUSTER", []string{"CLUSTER without a table"}},
		{"sqlite", "VACUUM", []string{"VACUUM cannot run inside a transaction on SQLite"}},
		{"sqlite", "ATTACH DATABASE 'x.db' AS x", []string{"ATTACH"}},
		{"sqlite", "DETACH x", []string{"DETACH"}},
		{"", "COMMIT", []string{"COMMIT controls the transaction", "remove it"}},
		{"postgres", "BEGIN", []string{"BEGIN controls the transaction"}},
		{"mysql", "START TRANSACTION", []string{"START TRANSACTION controls the transaction"}},
		{"sqlite", "ROLLBACK", []string{"ROLLBACK controls the transaction"}},
		{"postgres", "SAVEPOINT s", []string{"SAVEPOINT controls the transaction"}},
		{"mysql", "RELEASE SAVEPOINT s", []string{"RELEASE controls the transaction"}},
		{"postgres", "END", []string{"END controls the transaction"}},
		{"postgres", "ABORT", []string{"ABORT controls the transaction"}},
		{"postgres", "PREPARE TRANSACTION 'x'", []string{"PREPARE TRANSACTION"}},
		{"mysql", "XA START 'x'", []string{"XA controls the transaction"}},
		{"postgres", "SELECT 1; SELECT 2", []string{"more than one statement", "one statement per list item"}},
		{"mysql", "UPDATE t SET a = 1; /* c */ DELETE FROM t", []string{"more than one statement"}},
		{"sqlite", "SELECT 1;;SELECT 2", []string{"more than one statement"}},
		{"postgres", "SELECT 'abc", []string{"not closed"}},
		{"postgres", "SELECT $x$ abc", []string{"dollar-quoted string", "not closed"}},
		{"mysql", "SELECT 1 /* abc", []string{"comment", "not closed"}},
		{"sqlite", "-- nothing but a comment", []string{"only comments"}},
	} {
		_, err := define(sqlJob("bad", tc.stmt), tc.dialect)
		fes := fieldErrors(t, err)
		if len(fes) != 1 {
			t.Errorf("%s: %q: got %d errors, want 1: %v", dialectName(tc.dialect), tc.stmt, len(fes), err)
			continue
		}
		fe := fes[0]
		if fe.Job != "bad" || fe.Field != "spec.sql.statements[0]" {
			t.Errorf("%s: %q: error names job %q field %q, want bad and spec.sql.statements[0]", dialectName(tc.dialect), tc.stmt, fe.Job, fe.Field)
		}
		for _, w := range tc.want {
			if !strings.Contains(fe.Msg, w) {
				t.Errorf("%s: %q: message %q lacks %q", dialectName(tc.dialect), tc.stmt, fe.Msg, w)
			}
		}
		if !strings.HasPrefix(err.Error(), "job bad: spec.sql.statements[0]: ") {
			t.Errorf("%s: %q: error %q does not start with the job and field", dialectName(tc.dialect), tc.stmt, err)
		}
	}
}

// Every problem of every statement is reported, each with its own field.
func TestBuildReportsEveryProblem(t *testing.T) {
	_, err := define(sqlJob("many", "SELECT 1", "   ", "SELECT @a, @b", "COMMIT"), "postgres")
	got := map[string]int{}
	for _, fe := range fieldErrors(t, err) {
		got[fe.Field]++
	}
	want := map[string]int{"spec.sql.statements[1]": 1, "spec.sql.statements[2]": 2, "spec.sql.statements[3]": 1}
	if len(got) != len(want) {
		t.Fatalf("errors by field = %v, want %v (%v)", got, want, err)
	}
	for f, n := range want {
		if got[f] != n {
			t.Errorf("%s: %d errors, want %d (%v)", f, got[f], n, err)
		}
	}
}

func TestBuildRefusesNoStatements(t *testing.T) {
	for _, stmts := range [][]string{nil, {}} {
		_, err := define(sqlJob("none", stmts...), "sqlite")
		fes := fieldErrors(t, err)
		if len(fes) != 1 || fes[0].Job != "none" || fes[0].Field != "spec.sql.statements" || !strings.Contains(fes[0].Msg, "at least one statement") {
			t.Errorf("no statements: %v", err)
		}
	}
}

func TestBuildReturnsATxJob(t *testing.T) {
	def, err := define(sqlJob("tx", "SELECT 1"), "sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := def.Work.(jobs.TxJob); !ok || def.Kind != "sql" {
		t.Fatalf("work %T of kind %q, want a jobs.TxJob of kind sql", def.Work, def.Kind)
	}
}
