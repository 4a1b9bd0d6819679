package sqljob

import (
	"slices"
	"strings"

	"github.com/leasecron/leasecron/pkg/model"
)

// refusal says why a statement cannot run in the slot's transaction.
type refusal struct {
	what string // the statement's leading keywords, such as "ALTER"
	why  string // "commits implicitly on MariaDB/MySQL", …
	fix  string
}

func (r refusal) String() string {
	return r.what + " " + r.why + ", so it cannot run in the slot's transaction: " + r.fix
}

const (
	fixTxControl = "remove it (the engine runs every statement inside the slot's transaction, and commits that together with the slot's succeeded mark)"
	fixSchema    = "move schema changes to a migration"
	fixCommand   = "run it from a maintenance script, outside leasecron"
)

// refuse returns why the statement whose code words are ws cannot keep the
// kind's promise on dialect, or nil. It knows statements by their leading
// keywords; dynamic SQL (EXECUTE, CALL of a procedure that commits) is not
// recognised.
func refuse(ws []word, dialect string) *refusal {
	if len(ws) == 0 {
		return nil
	}
	w := func(i int) string {
		if i < len(ws) {
			return ws[i].text
		}
		return ""
	}
	first := w(0)
	// Transaction control, on every dialect: it would end the ledger's
	// transaction (or start a nested one that MariaDB/MySQL turn into a
	// commit).
	switch first {
	case "BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ABORT":
		return &refusal{first, "controls the transaction", fixTxControl}
	case "START":
		if w(1) == "TRANSACTION" {
			return &refusal{"START TRANSACTION", "controls the transaction", fixTxControl}
		}
	case "PREPARE":
		if w(1) == "TRANSACTION" {
			return &refusal{"PREPARE TRANSACTION", "ends the transaction", fixTxControl}
		}
	}
	switch dialect {
	case model.MySQL:
		return refuseMySQL(first, w)
	case model.Postgres:
		return refusePostgres(first, w, ws)
	case model.SQLite:
		switch first {
		case "VACUUM", "ATTACH", "DETACH":
			return &refusal{first, "cannot run inside a transaction on SQLite", fixCommand}
		}
	}
	return nil
}

// refuseMySQL knows the statements MariaDB and MySQL commit implicitly
// before (and most of them after) they run: "Statements That Cause an
// Implicit Commit" in the MySQL manual, and MariaDB's list of the same name.
func refuseMySQL(first string, w func(int) string) *refusal {
	implicit := func(what, fix string) *refusal {
		return &refusal{what, "commits implicitly on MariaDB/MySQL", fix}
	}
	switch first {
	case "CREATE", "DROP":
		i := 1
		if first == "CREATE" && w(1) == "OR" && w(2) == "REPLACE" {
			i = 3
		}
		if w(i) == "TEMPORARY" {
			return nil // temporary tables do not commit
		}
		return implicit(first, fixSchema+" (CREATE TEMPORARY TABLE and DROP TEMPORARY TABLE are fine)")
	case "ALTER", "RENAME":
		return implicit(first, fixSchema)
	case "TRUNCATE":
		return implicit(first, "use DELETE FROM, which is transactional, or run it from a maintenance script")
	case "ANALYZE":
		// ANALYZE TABLE; MariaDB's ANALYZE SELECT … only explains a query.
		switch w(1) {
		case "TABLE", "LOCAL", "NO_WRITE_TO_BINLOG":
			return implicit("ANALYZE TABLE", fixCommand)
		}
	case "GRANT", "REVOKE", "OPTIMIZE", "REPAIR", "CHECK", "FLUSH", "INSTALL", "UNINSTALL", "RESET", "STOP", "CHANGE":
		return implicit(first, fixCommand)
	case "START": // START REPLICA, START SLAVE; START TRANSACTION is refused above
		return implicit(first+" "+w(1), fixCommand)
	case "LOCK", "UNLOCK":
		return implicit(first+" "+w(1), "remove it (the rows the statements change stay locked until the slot's transaction commits)")
	case "CACHE", "LOAD":
		if w(1) == "INDEX" {
			return implicit(first+" INDEX", fixCommand)
		}
	case "XA":
		return &refusal{"XA", "controls the transaction", fixTxControl}
	case "SET":
		if w(1) == "PASSWORD" {
			return implicit("SET PASSWORD", fixCommand)
		}
		for i := 1; w(i) != ""; i++ {
			if w(i) == "AUTOCOMMIT" {
				return implicit("SET autocommit", fixTxControl)
			}
		}
	}
	return nil
}

// refusePostgres knows the statements PostgreSQL refuses to run inside a
// transaction block. Nothing commits implicitly there, so these would fail
// every attempt rather than break the promise; refusing them up front says
// so before the first slot.
func refusePostgres(first string, w func(int) string, ws []word) *refusal {
	noTx := func(what, fix string) *refusal {
		return &refusal{what, "cannot run inside a transaction block on PostgreSQL", fix}
	}
	switch first {
	case "VACUUM":
		return noTx(first, "leave it to autovacuum, or run it from a maintenance script")
	case "CREATE", "DROP":
		switch w(1) {
		case "DATABASE", "TABLESPACE", "SUBSCRIPTION":
			return noTx(first+" "+w(1), fixCommand)
		}
		i := 1
		if w(i) == "UNIQUE" {
			i++
		}
		if w(i) == "INDEX" && w(i+1) == "CONCURRENTLY" {
			return noTx(strings.Join(texts(ws[:i+2]), " "), fixSchema)
		}
	case "ALTER":
		if w(1) == "SYSTEM" {
			return noTx("ALTER SYSTEM", fixCommand)
		}
	case "REINDEX":
		switch w(1) {
		case "SCHEMA", "DATABASE", "SYSTEM":
			return noTx("REINDEX "+w(1), fixCommand)
		}
		if slices.ContainsFunc(ws, func(x word) bool { return x.text == "CONCURRENTLY" }) {
			return noTx("REINDEX CONCURRENTLY", fixCommand)
		}
	case "CLUSTER":
		// CLUSTER without a table reclusters every table of the database.
		rest := slices.DeleteFunc(slices.Clone(ws[1:]), func(x word) bool { return x.text == "VERBOSE" })
		if len(rest) == 0 {
			return noTx("CLUSTER without a table", "name the table (CLUSTER t USING i)")
		}
	case "DISCARD":
		if w(1) == "ALL" {
			return noTx("DISCARD ALL", "remove it")
		}
	}
	return nil
}

func texts(ws []word) []string {
	out := make([]string, len(ws))
	for i, x := range ws {
		out[i] = x.text
	}
	return out
}
