// Command crdgen finishes the ScheduledJob CRD that controller-gen writes
// from pkg/spec's markers, with what a marker cannot carry:
//
//   - spec.timeZone: the zones of Go's own zone database (the zoneinfo.zip
//     that time/tzdata embeds in the controller), as a CEL rule;
//   - spec.schedule: the grammar jobs.ParseSchedule accepts, as a CEL regular
//     expression built in rules.go (and tested there against the parser);
//   - spec.kubernetesJob.template: without the descriptions of the batch/v1
//     types, which would make up most of the CRD (kubectl explain job.spec
//     has them).
//
// It rewrites the file in place; `make generate` runs it after
// controller-gen.
//
//	go run ./hack/crdgen -zoneinfo "$(go env GOROOT)/lib/time/zoneinfo.zip" FILE
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

func main() {
	zoneinfo := flag.String("zoneinfo", "", "Go's zone database: $(go env GOROOT)/lib/time/zoneinfo.zip")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: crdgen -zoneinfo ZIP CRD.yaml")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *zoneinfo == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*zoneinfo, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}

func run(zoneinfo, path string) error {
	zones, err := readZones(zoneinfo)
	if err != nil {
		return err
	}
	in, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := finish(in, zones)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, out, 0o644)
}

// finish adds the rules to a CRD as controller-gen wrote it and returns it in
// the same form (a YAML document with sorted keys, after a "---" line).
func finish(crd []byte, zones []string) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(bytes.TrimPrefix(crd, []byte("---\n")), &doc); err != nil {
		return nil, err
	}
	versions, _ := dig(doc, "spec", "versions").([]any)
	if len(versions) == 0 {
		return nil, errors.New("no spec.versions: not a CRD from controller-gen?")
	}
	for _, v := range versions {
		props, ok := dig(v, "schema", "openAPIV3Schema", "properties", "spec", "properties").(map[string]any)
		if !ok {
			return nil, errors.New("no schema for .spec")
		}
		for name, rule := range map[string]map[string]any{"timeZone": zoneRule(zones), "schedule": scheduleRule()} {
			p, ok := props[name].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("no schema for .spec.%s", name)
			}
			p["x-kubernetes-validations"] = []any{rule}
		}
		tmpl, ok := dig(props, "kubernetesJob", "properties", "template").(map[string]any)
		if !ok {
			return nil, errors.New("no schema for .spec.kubernetesJob.template")
		}
		for _, sub := range subschemas(tmpl) {
			dropDescriptions(sub)
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return append([]byte("---\n"), out...), nil
}

// dig walks maps by key; nil when a key is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// subschemas are the schemas directly inside a schema: its properties, items,
// additionalProperties and the members of allOf, anyOf, oneOf and not.
func subschemas(s map[string]any) []map[string]any {
	var out []map[string]any
	add := func(v any) {
		if m, ok := v.(map[string]any); ok {
			out = append(out, m)
		}
	}
	if props, ok := s["properties"].(map[string]any); ok {
		for _, p := range props {
			add(p)
		}
	}
	add(s["items"])
	add(s["additionalProperties"])
	add(s["not"])
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		list, _ := s[k].([]any)
		for _, m := range list {
			add(m)
		}
	}
	return out
}

// dropDescriptions removes the description of s and of every schema in it.
func dropDescriptions(s map[string]any) {
	delete(s, "description")
	for _, sub := range subschemas(s) {
		dropDescriptions(sub)
	}
}
