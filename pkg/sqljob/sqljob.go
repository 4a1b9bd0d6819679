// Package sqljob is the sql job kind: a list of SQL statements that run, in
// order, against the ledger's database for every slot.
//
//	spec:
//	  schedule: "0 5 * * *"
//	  sql:
//	    statements:
//	      - >-
//	        INSERT INTO daily_rollup (day, total)
//	        SELECT @slot_date, count(*) FROM orders
//	        WHERE created_at >= @prev_slot AND created_at < @slot
//	        ON CONFLICT (day) DO NOTHING
//
// # The promise: exactly-once effect
//
// The statements run inside the transaction that marks the slot succeeded
// in the ledger (jobs.TxJob): they commit together with that mark, or not at
// all. A slot whose attempt fails, times out, or whose leader was superseded
// (fenced) leaves nothing behind, and a slot that succeeded is never run
// again, so even a statement that is not idempotent (UPDATE counters SET
// n = n + 1) takes effect exactly once per slot.
//
// What breaks the promise:
//
//   - A statement that commits implicitly ends the ledger's transaction
//     early: MariaDB/MySQL commit before (and after) DDL such as CREATE,
//     ALTER, DROP, RENAME and TRUNCATE, account statements (GRANT, REVOKE)
//     and administrative ones (ANALYZE TABLE, OPTIMIZE, FLUSH, LOCK TABLES,
//     …); every dialect ends it on COMMIT, ROLLBACK, BEGIN and the like.
//     Build refuses these where it recognises them by their leading keywords,
//     for the dialect the job is built for (spec.Env.Dialect): on
//     MariaDB/MySQL everything on that list except CREATE/DROP TEMPORARY
//     TABLE; transaction control everywhere. PostgreSQL and SQLite never
//     commit implicitly, but refuse some statements inside a transaction
//     (PostgreSQL VACUUM, CREATE INDEX CONCURRENTLY, CREATE DATABASE, …;
//     SQLite VACUUM, ATTACH, DETACH): Build refuses those too, since every
//     attempt would fail. What it cannot see is dynamic SQL: a procedure
//     that commits (CALL on MariaDB/MySQL), a prepared statement run with
//     EXECUTE.
//   - SQL whose effect is outside the ledger's database — dblink or
//     postgres_fdw writes, a FEDERATED or CONNECT table on MariaDB — is an
//     external effect: the remote side may commit and keep the effect while
//     the slot's transaction rolls back, so it happens at least once, not
//     exactly once.
//
// An sql job should still write with a key of its own where it can (INSERT
// … ON CONFLICT DO NOTHING on the slot's date): the third guard, so that a
// slot run again after its ledger row was lost (pruned history, a restored
// backup) cannot double a row.
//
// # Parameters
//
// Statements receive the slot context as named parameters, never the
// current time, so a caught-up or backfilled slot does the work of its own
// time:
//
//	@slot        the slot's time (a UTC timestamp)
//	@slot_date   the slot's calendar date in the job's zone ('YYYY-MM-DD' text)
//	@prev_slot   the schedule's slot before it (a UTC timestamp; NULL if the
//	             schedule had none): [@prev_slot, @slot) is the slot's interval
//	@job         the job's name
//	@key         "<job>@<slot RFC 3339 UTC>": the same on every attempt
//
// Build finds them with a scanner of the dialect's lexical rules, so '@'
// inside strings ('a@b.c'), quoted identifiers, comments (--, /* */, and #
// on MariaDB/MySQL) and PostgreSQL dollar-quoted strings is text. Only '@'
// followed at once by a letter or '_' is a parameter (PostgreSQL's @ and @>
// operators are not), and any name other than the five is refused — which
// includes MariaDB/MySQL user variables (@x, which outlive the transaction
// on a pooled connection) and system variables (@@x). The parameters are
// rewritten, once at Build, to the driver's positional placeholders ($1 … on
// PostgreSQL, ? on MariaDB/MySQL and SQLite; a name used twice is bound
// twice), and the driver's own placeholders in the text are refused, since
// nothing would bind them. On PostgreSQL a parameter's type is inferred from
// where it stands (the column it is compared with or inserted into); where
// that leaves it open, as in @slot_date + 1, write a cast:
// CAST(@slot_date AS date) + 1.
//
// Each list item is one statement: a ';' followed by more code is refused.
//
// # Time limit
//
// The attempt's timeout (spec.timeout) also bounds every statement on the
// server, so a statement never outlives the attempt even when the leader
// that sent it is gone: on PostgreSQL with statement_timeout, set for the
// rest of the transaction (SET LOCAL) before each statement, and on MariaDB
// with SET STATEMENT max_statement_time=… FOR the statement. The limit is a
// little shorter than the time left (a tenth of it, at most a second), so
// that the server stops an overlong statement with its own error before the
// client gives up on the connection. (MariaDB stops queries and writes at the
// limit with error 1969, but lets a few functions end early without one: DO
// SLEEP(n) and SELECT BENCHMARK(…) just return.) MySQL proper has no such limit for
// statements other than SELECT: there the attempt's context alone stops a
// statement (the driver closes the connection, and the server ends the
// statement when it notices). SQLite runs in the process, and the context
// interrupts it. The job's limit takes the place of the session's own
// statement limit (model.SessionLimits) for the job's statements.
package sqljob

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

// KindName is the kind's name in a job spec.
const KindName = "sql"

// Kind is the sql kind, for a spec.Catalog.
type Kind struct{}

// Name implements spec.Kind.
func (Kind) Name() string { return KindName }

// Build implements spec.Kind: it checks spec.sql against the rules of
// j.Env.Dialect (see the package documentation) and returns a *Job.
func (Kind) Build(j spec.Job) (any, error) {
	if j.Spec.SQL == nil {
		return nil, j.Errorf("spec.sql", "missing: give the statements to run, as sql: {statements: [...]}")
	}
	job, err := build(j.Name, j.Spec.SQL.Statements, j.Env.Dialect)
	if err != nil {
		return nil, err // not a typed nil *Job
	}
	return job, nil
}

// Parameters returns the names of the slot parameters a statement may use
// (without the '@').
func Parameters() []string {
	return []string{"slot", "slot_date", "prev_slot", "job", "key"}
}

// param is one slot parameter.
type param int

const (
	paramSlot param = iota
	paramSlotDate
	paramPrevSlot
	paramJob
	paramKey
)

func paramNamed(name string) (param, bool) {
	for i, n := range Parameters() {
		if n == name {
			return param(i), true
		}
	}
	return 0, false
}

// value is p's value for slot, as the drivers take it.
func (p param) value(s jobs.Slot) any {
	switch p {
	case paramSlot:
		return s.Time.UTC()
	case paramSlotDate:
		return s.Date.String()
	case paramPrevSlot:
		if s.Prev.IsZero() {
			return nil
		}
		return s.Prev.UTC()
	case paramJob:
		return s.Job
	case paramKey:
		return s.Key
	}
	panic(fmt.Sprintf("sqljob: unknown parameter %d", p))
}

// statement is one statement ready for one dialect's driver.
type statement struct {
	query  string  // with the dialect's placeholders
	params []param // what each placeholder is bound to, in order
}

func (s statement) args(slot jobs.Slot) []any {
	args := make([]any, len(s.params))
	for i, p := range s.params {
		args[i] = p.value(slot)
	}
	return args
}

// Job is the sql work: it implements jobs.TxJob. Its statements are checked
// and rewritten for the dialect it was built for; run on another dialect's
// database, it checks and rewrites them for that one on first use.
type Job struct {
	name    string
	sources []string
	dialect string
	stmts   []statement

	mu      sync.Mutex
	other   map[string][]statement // compiled for dialects other than the built one
	probed  bool                   // whether mariaDB is known
	mariaDB bool                   // the MySQL-protocol server is MariaDB
}

func build(name string, sources []string, dialect string) (*Job, error) {
	stmts, err := compile(name, sources, dialect)
	if err != nil {
		return nil, err
	}
	return &Job{name: name, sources: sources, dialect: dialect, stmts: stmts}, nil
}

// compile checks every statement for dialect and rewrites its parameters,
// returning one FieldError per problem, joined.
func compile(job string, sources []string, dialect string) ([]statement, error) {
	if len(sources) == 0 {
		return nil, spec.Errorf(job, "spec.sql.statements", "empty: give at least one statement, such as \"INSERT INTO rollup (day) VALUES (@slot_date)\"")
	}
	var (
		errs  []error
		stmts = make([]statement, 0, len(sources))
	)
	for i, src := range sources {
		field := fmt.Sprintf("spec.sql.statements[%d]", i)
		bad := func(format string, args ...any) { errs = append(errs, spec.Errorf(job, field, format, args...)) }
		s, problems := compileOne(src, dialect)
		for _, p := range problems {
			bad("%s", p)
		}
		stmts = append(stmts, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return stmts, nil
}

// compileOne checks one statement and rewrites it, or says what is wrong.
func compileOne(src, dialect string) (statement, []string) {
	if strings.TrimSpace(src) == "" {
		return statement{}, []string{"empty: write a statement, or remove the item"}
	}
	sc := scan(src, dialect)
	if len(sc.problems) > 0 {
		return statement{}, sc.problems
	}
	if sc.end == 0 {
		return statement{}, []string{"holds only comments: write a statement, or remove the item"}
	}
	var problems []string
	if sc.more >= 0 {
		next := src[sc.more:]
		if r := []rune(next); len(r) > 24 {
			next = string(r[:24]) + "…"
		}
		problems = append(problems, fmt.Sprintf("holds more than one statement (a second begins at byte %d: %q): one statement per list item, so split it into separate items", sc.more, next))
	}
	known := "the parameters are @" + strings.Join(Parameters(), ", @")
	seen := map[string]bool{}
	for _, r := range sc.refs {
		if seen[r.name] {
			continue
		}
		switch r.kind {
		case refNamed:
			if _, ok := paramNamed(r.name); ok {
				continue
			}
			msg := fmt.Sprintf("unknown parameter @%s: %s (the slot context)", r.name, known)
			for _, n := range Parameters() {
				if strings.EqualFold(n, r.name) {
					msg += "; did you mean @" + n + "?"
				}
			}
			if dialect == model.MySQL {
				msg += "; MariaDB/MySQL user variables cannot be used, as they outlive the transaction on the pooled connection"
			}
			problems = append(problems, msg)
		case refSystemVar:
			problems = append(problems, fmt.Sprintf("%s is a MariaDB/MySQL system variable, which a job's statement cannot use: remove it; %s", r.name, known))
		case refQuotedVar:
			problems = append(problems, fmt.Sprintf("%s is a MariaDB/MySQL user variable, which a job's statement cannot use (it outlives the transaction on the pooled connection): remove it; %s", r.name, known))
		case refPositional:
			problems = append(problems, fmt.Sprintf("%s is a placeholder of the driver's own, which nothing binds: use the named parameters instead (%s), or quote it if it is text", r.name, known))
		}
		seen[r.name] = true
	}
	if r := refuse(sc.words, dialect); r != nil {
		problems = append(problems, r.String())
	}
	if len(problems) > 0 {
		return statement{}, problems
	}
	return rewrite(src, sc, dialect), nil
}

// rewrite replaces the named parameters with the dialect's placeholders and
// drops what follows the statement's last code (a terminating ';').
func rewrite(src string, sc scanned, dialect string) statement {
	var (
		b    strings.Builder
		s    statement
		last int
	)
	for _, r := range sc.refs {
		p, _ := paramNamed(r.name)
		b.WriteString(src[last:r.start])
		if dialect == model.Postgres {
			if r.start > 0 && isIdentByte(src[r.start-1]) {
				b.WriteByte(' ') // x@slot must not become the identifier x$1
			}
			b.WriteString("$" + strconv.Itoa(len(s.params)+1))
		} else {
			b.WriteByte('?')
		}
		s.params = append(s.params, p)
		last = r.end
	}
	b.WriteString(src[last:sc.end])
	s.query = b.String()
	return s
}

// statementsFor returns the statements rewritten for dialect.
func (j *Job) statementsFor(dialect string) ([]statement, error) {
	if dialect == j.dialect {
		return j.stmts, nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if s, ok := j.other[dialect]; ok {
		return s, nil
	}
	s, err := compile(j.name, j.sources, dialect)
	if err != nil {
		return nil, fmt.Errorf("the statements cannot run on %s: %w", dialect, err)
	}
	if j.other == nil {
		j.other = map[string][]statement{}
	}
	j.other[dialect] = s
	return s, nil
}

// RunTx implements jobs.TxJob: it runs the statements in order on tx's own
// connection, with the slot's parameters bound, and never commits or rolls
// back tx. An error names the statement that failed.
func (j *Job) RunTx(ctx context.Context, tx *gorm.DB, slot jobs.Slot) error {
	pool := tx.Statement.ConnPool
	if _, ok := pool.(gorm.TxCommitter); !ok {
		return errors.New("sql job: tx is not a transaction: the statements must run in the ledger's transaction (jobs.Ledger.Complete)")
	}
	dialect := tx.Dialector.Name()
	stmts, err := j.statementsFor(dialect)
	if err != nil {
		return err
	}
	deadline, limited := ctx.Deadline()
	mariaDB := false
	if limited && dialect == model.MySQL {
		if mariaDB, err = j.isMariaDB(ctx, pool); err != nil {
			return err
		}
	}
	for i, s := range stmts {
		which := fmt.Sprintf("statement %d (spec.sql.statements[%d])", i+1, i)
		query := s.query
		if limited {
			left := time.Until(deadline)
			if left <= 0 {
				return fmt.Errorf("%s: not started, the attempt's time (spec.timeout) is up: %w", which, context.DeadlineExceeded)
			}
			limit := serverLimit(left)
			switch {
			case dialect == model.Postgres:
				// SET LOCAL, with the value bound, so the driver's statement
				// cache sees one query.
				ms := strconv.FormatInt(limit.Milliseconds(), 10)
				if _, err := pool.ExecContext(ctx, "SELECT set_config('statement_timeout', $1, true)", ms); err != nil {
					return fmt.Errorf("%s: set statement_timeout: %w", which, err)
				}
			case mariaDB:
				query = "SET STATEMENT max_statement_time=" + strconv.FormatFloat(limit.Seconds(), 'f', 3, 64) + " FOR " + query
			}
		}
		if _, err := pool.ExecContext(ctx, query, s.args(slot)...); err != nil {
			if limited && serverTimeout(err) {
				return fmt.Errorf("%s: stopped by the server at the attempt's time limit (spec.timeout): %w", which, err)
			}
			return fmt.Errorf("%s: %w", which, err)
		}
	}
	return nil
}

// serverLimit is the statement limit for the time left in an attempt:
// a little less than all of it, so that the server stops an overlong
// statement with its own error before the client abandons the connection.
func serverLimit(left time.Duration) time.Duration {
	return max(left-min(left/10, time.Second), time.Millisecond)
}

// serverTimeout reports whether err is the server stopping a statement at
// its time limit.
func serverTimeout(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "57014" && strings.Contains(pg.Message, "statement timeout")
	}
	var my *mysql.MySQLError
	if errors.As(err, &my) {
		return my.Number == 1969 // ER_STATEMENT_TIMEOUT: max_statement_time exceeded
	}
	return false
}

// isMariaDB asks the MySQL-protocol server, once per Job, whether it is
// MariaDB, which has SET STATEMENT max_statement_time; MySQL has not.
func (j *Job) isMariaDB(ctx context.Context, pool gorm.ConnPool) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.probed {
		return j.mariaDB, nil
	}
	var version string
	if err := pool.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return false, fmt.Errorf("sql job: read the server's version: %w", err)
	}
	j.probed, j.mariaDB = true, strings.Contains(strings.ToLower(version), "mariadb")
	return j.mariaDB, nil
}
