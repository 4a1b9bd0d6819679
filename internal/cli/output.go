package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/leasecron/leasecron/internal/version"
)

// Values of -o/--output.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// outputOptions is -o/--output. The commands that report something (status,
// verify, jobs, version) print it for people as a table, the default, or for
// scripts as one JSON or YAML document per invocation. Each document is a Go
// struct with json tags and an object at the top: fields are lowerCamelCase,
// times RFC 3339 in UTC (encoding/json's form of a UTC time.Time, with
// nanoseconds when there are any), durations Go duration strings ("1h0m0s"),
// dates YYYY-MM-DD. The YAML is converted from the JSON bytes
// (sigs.k8s.io/yaml), so the two always hold the same fields and values.
type outputOptions struct{ format string }

func (o *outputOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.format, "output", "o", outputTable, "output format: table, json or yaml (one document; its fields are in the README)")
}

// check refuses an unknown format; commands call it before anything else.
func (o *outputOptions) check() error {
	switch o.format {
	case outputTable, outputJSON, outputYAML:
		return nil
	}
	return usagef("--output %q is not valid: use table, json or yaml", o.format)
}

// document reports whether a JSON or YAML document is asked for.
func (o *outputOptions) document() bool { return o.format != outputTable }

// print writes doc as JSON or YAML, or, for a table, calls table.
func (o *outputOptions) print(w io.Writer, doc any, table func(io.Writer) error) error {
	if !o.document() {
		return table(w)
	}
	return o.encode(w, doc)
}

// encode writes doc as JSON or YAML.
func (o *outputOptions) encode(w io.Writer, doc any) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the output as JSON: %w", err)
	}
	b = append(b, '\n')
	if o.format == outputYAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return fmt.Errorf("convert the output to YAML: %w", err)
		}
	}
	_, err = w.Write(b)
	return err
}

// utc is t in UTC, as every document writes times.
func utc(t time.Time) *time.Time {
	u := t.UTC()
	return &u
}

// utcOrNil is utc for an optional time.
func utcOrNil(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	return utc(*t)
}

// versionDoc is `leasecron version -o json|yaml`.
type versionDoc struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	// Platform is GOOS/GOARCH, such as linux/amd64.
	Platform string `json:"platform"`
}

func currentVersion() versionDoc {
	return versionDoc{Version: version.Version, Commit: version.Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

// versionLine is what both `leasecron version` and `leasecron --version`
// print, without the newline.
func versionLine() string {
	return fmt.Sprintf("leasecron %s (commit %s)", version.Version, version.Commit)
}
