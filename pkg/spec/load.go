package spec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// LoadFile reads the jobs file at path (see Load).
func LoadFile(path string) ([]ScheduledJob, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read the jobs file %s: %w", path, err)
	}
	defer f.Close()
	return Load(f, path)
}

// Load reads one or more YAML documents, each a ScheduledJob, from r; source
// names r in errors. Unknown fields, a document that is not YAML and the
// wrong apiVersion or kind are errors; empty documents are skipped. It does
// not validate the jobs (see Catalog.Definitions).
func Load(r io.Reader, source string) ([]ScheduledJob, error) {
	rd := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var (
		out  []ScheduledJob
		errs []error
	)
	for doc := 1; ; doc++ {
		b, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: cannot be read: %w", source, doc, err)
		}
		if empty(b) {
			doc--
			continue
		}
		var sj ScheduledJob
		if err := yaml.UnmarshalStrict(b, &sj); err != nil {
			where := fmt.Sprintf("%s: document %d", source, doc)
			var named ScheduledJob
			if yaml.Unmarshal(b, &named) == nil && named.Name != "" {
				where += ": job " + named.Name
			}
			errs = append(errs, fmt.Errorf("%s: not a ScheduledJob: %s: fix the YAML (see the README's \"Your own jobs\")", where, decodeProblem(err)))
			continue
		}
		switch {
		case sj.APIVersion != APIVersion:
			errs = append(errs, fmt.Errorf("%s: document %d: apiVersion %q: want apiVersion: %s", source, doc, sj.APIVersion, APIVersion))
			continue
		case sj.Kind != KindName:
			errs = append(errs, fmt.Errorf("%s: document %d: kind %q: want kind: %s", source, doc, sj.Kind, KindName))
			continue
		}
		out = append(out, sj)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// empty reports whether a YAML document holds only comments and space.
func empty(b []byte) bool {
	for _, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && !bytes.Equal(line, []byte("---")) {
			return false
		}
	}
	return true
}

// decodeProblem is the part of a YAML decoding error that says what is
// wrong, without the layers of the YAML-to-JSON conversion.
func decodeProblem(err error) string {
	msg := err.Error()
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}
