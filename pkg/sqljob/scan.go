package sqljob

import (
	"fmt"
	"strings"

	"github.com/leasecron/leasecron/pkg/model"
)

// ref is one parameter-like token in a statement's code: a named parameter
// (@name), or something the scanner refuses (a MariaDB/MySQL system or
// quoted user variable, or a positional placeholder of the driver's own).
type ref struct {
	start, end int // byte offsets in the statement
	name       string
	kind       refKind
}

type refKind int

const (
	refNamed      refKind = iota // @name: a slot parameter, if name is known
	refSystemVar                 // @@name on MariaDB/MySQL
	refQuotedVar                 // @'x', @"x", @`x` on MariaDB/MySQL
	refPositional                // ? (MySQL, SQLite), $1 (PostgreSQL), :name, $name (SQLite)
)

// word is one keyword or unquoted identifier in a statement's code,
// upper-cased.
type word struct {
	text  string
	start int
}

// scanned is what scan finds in one statement.
type scanned struct {
	refs  []ref
	words []word
	// end is the offset just past the statement's last code byte: what
	// follows (a terminating ';', trailing comments, space) is not sent.
	end int
	// more is the offset of code after a ';' (another statement), or -1.
	more int
	// problems are lexical errors: an unterminated string or comment.
	problems []string
}

// lexer scans one statement as the dialect's own lexer would, as far as it
// matters here: which '@', '?', '$' and ';' are code, and which are inside
// strings, quoted identifiers and comments. An empty dialect scans standard
// SQL only: single-quoted strings, double-quoted identifiers, -- and /* */
// comments.
type lexer struct {
	src     string
	dialect string
	out     scanned
	// execComments counts the open MariaDB/MySQL executable comments
	// (/*! ... */, /*M! ... */): their content is code.
	execComments int
}

func scan(src, dialect string) scanned {
	l := &lexer{src: src, dialect: dialect, out: scanned{more: -1}}
	l.run()
	return l.out
}

func (l *lexer) mysql() bool    { return l.dialect == model.MySQL }
func (l *lexer) postgres() bool { return l.dialect == model.Postgres }
func (l *lexer) sqlite() bool   { return l.dialect == model.SQLite }

func (l *lexer) at(i int) byte {
	if i < len(l.src) {
		return l.src[i]
	}
	return 0
}

func isSpace(c byte) bool { return c <= ' ' }
func isLetter(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isNameByte(c byte) bool   { return isLetter(c) || isDigit(c) }
func isIdentByte(c byte) bool  { return isNameByte(c) || c == '$' }
func isPlainQuote(c byte) bool { return c == '\'' || c == '"' || c == '`' }

// code records that src[start:end] is code (not space, not a comment).
func (l *lexer) code(start, end int, semicolon bool) {
	if semicolon {
		if l.out.more == -1 {
			l.out.more = -2 // a ';' was seen: any code after it is another statement
		}
		return
	}
	if l.out.more == -2 {
		l.out.more = start
	}
	l.out.end = end
}

func (l *lexer) problem(format string, args ...any) {
	l.out.problems = append(l.out.problems, fmt.Sprintf(format, args...))
}

func (l *lexer) run() {
	src := l.src
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case isSpace(c):
			i++
		case c == '\'':
			i = l.quoted(i, '\'', l.mysql(), "string")
		case c == '"':
			// An identifier in standard SQL; a string on MariaDB/MySQL
			// (without ANSI_QUOTES), with backslash escapes.
			i = l.quoted(i, '"', l.mysql(), "quoted identifier")
		case c == '`' && l.dialect != model.Postgres && l.dialect != "":
			i = l.quoted(i, '`', false, "backtick identifier")
		case c == '[' && l.sqlite():
			end := strings.IndexByte(src[i+1:], ']')
			if end < 0 {
				l.problem("the [identifier] at byte %d is not closed: add the closing ]", i)
				return
			}
			l.code(i, i+1+end+1, false)
			i += 1 + end + 1
		case c == '-' && l.at(i+1) == '-' && (!l.mysql() || isSpace(l.at(i+2))):
			// MariaDB/MySQL need a space after --; without it, -- is two minus signs.
			i = l.lineComment(i)
		case c == '#' && l.mysql():
			i = l.lineComment(i)
		case c == '/' && l.at(i+1) == '*':
			i = l.blockComment(i)
		case c == '*' && l.at(i+1) == '/' && l.execComments > 0:
			l.execComments--
			i += 2
		case c == '$' && l.postgres():
			i = l.dollar(i)
		case c == '$' && l.sqlite() && isLetter(l.at(i+1)):
			i = l.positional(i, i+1)
		case c == ':' && l.sqlite() && isLetter(l.at(i+1)):
			i = l.positional(i, i+1)
		case c == '?' && (l.mysql() || l.sqlite()):
			end := i + 1
			for end < len(src) && isDigit(src[end]) {
				end++
			}
			l.out.refs = append(l.out.refs, ref{start: i, end: end, name: src[i:end], kind: refPositional})
			l.code(i, end, false)
			i = end
		case c == '@':
			i = l.atSign(i)
		case c == ';':
			l.code(i, i+1, true)
			i++
		case isLetter(c):
			end := i + 1
			for end < len(src) && isIdentByte(src[end]) {
				end++
			}
			w := src[i:end]
			if l.postgres() && (w == "E" || w == "e") && l.at(end) == '\'' {
				// An escape string constant: backslash escapes.
				l.code(i, end, false)
				i = l.quoted(end, '\'', true, "string")
				continue
			}
			l.out.words = append(l.out.words, word{text: strings.ToUpper(w), start: i})
			l.code(i, end, false)
			i = end
		case isDigit(c):
			end := i + 1
			for end < len(src) && (isIdentByte(src[end]) || src[end] == '.') {
				end++
			}
			l.code(i, end, false)
			i = end
		default:
			l.code(i, i+1, false)
			i++
		}
	}
}

// quoted skips a token quoted with q starting at i (a doubled q stands for
// itself; with backslash, so does \q) and returns the offset after it.
func (l *lexer) quoted(i int, q byte, backslash bool, what string) int {
	src := l.src
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case '\\':
			if backslash {
				j++
			}
		case q:
			if l.at(j+1) == q {
				j++
				continue
			}
			l.code(i, j+1, false)
			return j + 1
		}
	}
	l.problem("the %s opened with %c at byte %d is not closed: close it with %c (write %c%c for a %c inside it)", what, q, i, q, q, q, q)
	return len(src)
}

func (l *lexer) lineComment(i int) int {
	end := strings.IndexByte(l.src[i:], '\n')
	if end < 0 {
		return len(l.src)
	}
	return i + end + 1
}

// blockComment skips a /* */ comment at i; PostgreSQL's nest. A MariaDB/MySQL
// executable comment (/*! ... */, /*M! ... */, with an optional version) is
// code: only its markers are skipped.
func (l *lexer) blockComment(i int) int {
	src := l.src
	if l.mysql() {
		j := i + 2
		if l.at(j) == 'M' && l.at(j+1) == '!' {
			j++
		}
		if l.at(j) == '!' {
			j++
			for j < len(src) && isDigit(src[j]) {
				j++
			}
			l.execComments++
			return j
		}
	}
	depth := 0
	for j := i; j+1 < len(src); j++ {
		switch {
		case src[j] == '/' && src[j+1] == '*':
			if depth == 0 || l.postgres() {
				depth++
			}
			j++
		case src[j] == '*' && src[j+1] == '/':
			depth--
			j++
			if depth == 0 {
				return j + 1
			}
		}
	}
	l.problem("the /* comment at byte %d is not closed: close it with */", i)
	return len(src)
}

// dollar handles a '$' in PostgreSQL code: a dollar-quoted string ($$...$$,
// $tag$...$tag$), a positional parameter ($1), or an operator character.
func (l *lexer) dollar(i int) int {
	src := l.src
	j := i + 1
	if isDigit(l.at(j)) {
		return l.positional(i, j)
	}
	if isLetter(l.at(j)) {
		for j < len(src) && isNameByte(src[j]) {
			j++
		}
	}
	if l.at(j) != '$' {
		l.code(i, i+1, false)
		return i + 1
	}
	tag := src[i : j+1]
	end := strings.Index(src[j+1:], tag)
	if end < 0 {
		l.problem("the dollar-quoted string opened with %s at byte %d is not closed: close it with %s", tag, i, tag)
		return len(src)
	}
	stop := j + 1 + end + len(tag)
	l.code(i, stop, false)
	return stop
}

// positional records a placeholder of the driver's own starting at i whose
// name (digits or letters) starts at j.
func (l *lexer) positional(i, j int) int {
	end := j
	for end < len(l.src) && isNameByte(l.src[end]) {
		end++
	}
	l.out.refs = append(l.out.refs, ref{start: i, end: end, name: l.src[i:end], kind: refPositional})
	l.code(i, end, false)
	return end
}

// atSign handles an '@' in code. Only '@' followed at once by a letter or '_'
// is a parameter: PostgreSQL's @ (absolute value) and @> <@ operators are
// followed by a space, a digit or an operator character. On MariaDB/MySQL,
// @@name is a system variable and @'name' a quoted user variable; on
// PostgreSQL, @@ is the text-search match operator.
func (l *lexer) atSign(i int) int {
	src := l.src
	next := l.at(i + 1)
	switch {
	case next == '@' && l.mysql():
		end := i + 2
		for end < len(src) && (isNameByte(src[end]) || src[end] == '.') {
			end++
		}
		l.out.refs = append(l.out.refs, ref{start: i, end: end, name: src[i:end], kind: refSystemVar})
		l.code(i, end, false)
		return end
	case next == '@':
		l.code(i, i+2, false)
		return i + 2
	case isPlainQuote(next) && l.mysql():
		l.out.refs = append(l.out.refs, ref{start: i, end: i + 1, name: "@" + string(next) + "…", kind: refQuotedVar})
		l.code(i, i+1, false)
		return i + 1 // the quoted name is scanned as a string next
	case isLetter(next):
		end := i + 1
		for end < len(src) && isNameByte(src[end]) {
			end++
		}
		l.out.refs = append(l.out.refs, ref{start: i, end: end, name: src[i+1 : end], kind: refNamed})
		l.code(i, end, false)
		return end
	}
	l.code(i, i+1, false)
	return i + 1
}
