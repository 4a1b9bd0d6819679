package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// chartValue is one value of the chart as its READMEs' tables list it: its
// dotted path in values.yaml, its default there, and whether a `# --`
// comment documents it.
type chartValue struct {
	key        string
	def        any
	documented bool
}

// chartValues flattens the chart's values.yaml into the values the READMEs'
// tables list, in file order. A key is a section or a value:
//   - a mapping some of whose keys carry a `# --` comment of their own, or
//     whose values include such a section (`metrics`), is a section: each of its keys is a value (or a section) under its dotted
//     path (`image.tag`, `networkPolicy.database.to`), and the section itself
//     is no row, commented or not (`rollingUpdate`, `startupProbe`);
//   - anything else is one value, its default the whole of it: a scalar, a
//     list of anything (`tolerations`, `networkPolicy.database.ports`), an
//     empty map (`podLabels`), or a map whose keys have no `# --` comment of
//     their own, such as a map keyed by the user or a Kubernetes object taken
//     whole (`schedules`, `resources`, `podSecurityContext`).
func chartValues(t *testing.T) []chartValue {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		t.Fatal("values.yaml is not one YAML mapping")
	}
	var out []chartValue
	var walk func(prefix string, m *yaml.Node)
	walk = func(prefix string, m *yaml.Node) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := prefix + k.Value
			if isSection(v) {
				walk(key+".", v)
				continue
			}
			var def any
			if err := v.Decode(&def); err != nil {
				t.Fatalf("values.yaml: %s: %v", key, err)
			}
			out = append(out, chartValue{key: key, def: def, documented: hasDocComment(k)})
		}
	}
	walk("", doc.Content[0])
	return out
}

// isSection: a non-empty mapping with a `# --` comment on one of its keys,
// or with a section among its values (`metrics.prometheusRule`).
func isSection(v *yaml.Node) bool {
	if v.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		if hasDocComment(v.Content[i]) || isSection(v.Content[i+1]) {
			return true
		}
	}
	return false
}

// hasDocComment: the comment block right above key has a `# --` line.
func hasDocComment(key *yaml.Node) bool {
	for _, l := range strings.Split(key.HeadComment, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			return true
		}
	}
	return false
}

// valuesTable is the values table that follows heading in the Markdown file:
// key → the Default cell's text, in the order of the rows (dupes lists keys
// of more than one row). A row's key cell is the key in backticks.
func valuesTable(t *testing.T, file, heading string) (rows map[string]string, order, dupes []string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	at := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == heading {
			at = i
			break
		}
	}
	if at < 0 {
		t.Fatalf("%s has no heading %q above its values table", file, heading)
	}
	for at < len(lines) && !strings.HasPrefix(lines[at], "| Key | Default |") {
		at++
	}
	if at == len(lines) {
		t.Fatalf("%s: no table with a header `| Key | Default | … |` under %q", file, heading)
	}
	rows = map[string]string{}
	for _, l := range lines[at+2:] { // past the header and its |---| line
		if !strings.HasPrefix(l, "|") {
			break
		}
		cells := tableCells(l)
		if len(cells) < 3 {
			t.Fatalf("%s: a row of the values table under %q has %d cells, want 3: %s", file, heading, len(cells), l)
		}
		key := strings.Trim(cells[0], "`")
		if _, ok := rows[key]; ok {
			dupes = append(dupes, key)
		}
		rows[key] = cells[1]
		order = append(order, key)
	}
	return rows, order, dupes
}

// tableCells splits a Markdown table row at the pipes that are neither
// escaped nor inside a code span, and trims each cell.
func tableCells(row string) []string {
	var cells []string
	var cell strings.Builder
	code := false
	row = strings.TrimSpace(row)
	for i := 1; i < len(row); i++ { // past the leading |
		switch c := row[i]; {
		case c == '\\' && i+1 < len(row):
			cell.WriteByte(c)
			cell.WriteByte(row[i+1])
			i++
		case c == '`':
			code = !code
			cell.WriteByte(c)
		case c == '|' && !code:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(c)
		}
	}
	return cells
}

// defaultCell parses a Default cell: one code span holding the default as
// YAML (flow style for maps and lists: `{daily-stats: "50 0 0 * * *"}`,
// `[]`, `""`).
func defaultCell(cell string) (any, error) {
	if len(cell) < 2 || cell[0] != '`' || cell[len(cell)-1] != '`' || strings.Count(cell, "`") != 2 {
		return nil, fmt.Errorf("the Default cell %s is not one code span (`…`) holding the default as YAML", cell)
	}
	var v any
	if err := yaml.Unmarshal([]byte(cell[1:len(cell)-1]), &v); err != nil {
		return nil, fmt.Errorf("the Default cell %s does not parse as YAML: %v", cell, err)
	}
	return v, nil
}

// asJSON is v in JSON, the form defaults (and rendered fields) are compared
// in: numbers of any Go type compare equal, and the keys of maps and the
// fields of structs alike are in sorted order.
func asJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%T: %v>", v, err)
	}
	var plain any
	if err := json.Unmarshal(b, &plain); err != nil {
		return fmt.Sprintf("<%T: %v>", v, err)
	}
	if b, err = json.Marshal(plain); err != nil {
		return fmt.Sprintf("<%T: %v>", v, err)
	}
	return string(b)
}

// TestChartValuesTablesMatchValuesYAML: the values tables of README.md
// ("Chart values") and charts/leasecron/README.md ("Values") list exactly the
// values of values.yaml (the keys chartValues flattens it to: a section's
// keys each on a row, a list or a map without documented keys as one row),
// each once and with the default values.yaml gives it, and every value has a
// `# --` comment in values.yaml. A Default cell is one code span that parses
// as YAML to that default. Every problem is reported on its own line, naming
// the file, the key and the fix, so a merge of branches that each added
// values shows at once what each README lacks.
func TestChartValuesTablesMatchValuesYAML(t *testing.T) {
	values := chartValues(t)
	if len(values) < 50 {
		t.Fatalf("values.yaml flattened to %d values: the flattening is broken", len(values))
	}
	for _, v := range values {
		if !v.documented {
			t.Errorf("values.yaml: %s has no `# --` comment right above it: document it", v.key)
		}
	}
	for _, readme := range []struct{ file, heading string }{
		{filepath.Join(repo, "README.md"), "### Chart values"},
		{filepath.Join(chartDir(), "README.md"), "## Values"},
	} {
		rel, err := filepath.Rel(repo, readme.file)
		if err != nil {
			t.Fatal(err)
		}
		where := fmt.Sprintf("%s (table under %q)", rel, readme.heading)
		rows, order, dupes := valuesTable(t, readme.file, readme.heading)
		for _, k := range dupes {
			t.Errorf("%s: `%s` has more than one row: keep one", where, k)
		}
		known := map[string]bool{}
		for _, v := range values {
			known[v.key] = true
			cell, ok := rows[v.key]
			if !ok {
				t.Errorf("%s: no row for `%s`: add | `%s` | `%s` | … |", where, v.key, v.key, asJSON(v.def))
				continue
			}
			got, err := defaultCell(cell)
			if err != nil {
				t.Errorf("%s: `%s`: %v; write `%s`", where, v.key, err, asJSON(v.def))
			} else if asJSON(got) != asJSON(v.def) {
				t.Errorf("%s: `%s`: the Default column says %s (%s), values.yaml has %s", where, v.key, cell, asJSON(got), asJSON(v.def))
			}
		}
		for _, k := range order {
			if !known[k] {
				t.Errorf("%s: row `%s` is no value of values.yaml (removed, misspelt, or a section whose keys have rows of their own): remove it or fix the key", where, k)
			}
		}
	}
}
