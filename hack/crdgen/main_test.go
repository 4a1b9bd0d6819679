package main

import (
	"bytes"
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

const crdPath = "../../charts/leasecron/crds/leasecron.io_scheduledjobs.yaml"

// finish adds the rules and drops the template's descriptions, and nothing
// else: run on its own output it changes nothing.
func TestFinish(t *testing.T) {
	zones, err := readZones(zoneinfo(t))
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.ReadFile(crdPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := finish(in, zones)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, in) {
		t.Errorf("finish changes its own output %s (or it is not up to date: run make generate)", crdPath)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	versions := dig(doc, "spec", "versions").([]any)
	spec := dig(versions[0], "schema", "openAPIV3Schema", "properties", "spec").(map[string]any)
	props := spec["properties"].(map[string]any)
	for _, name := range []string{"schedule", "timeZone"} {
		if rules, _ := dig(props, name, "x-kubernetes-validations").([]any); len(rules) != 1 {
			t.Errorf("spec.%s has %d rules, want 1", name, len(rules))
		}
	}
	if d, _ := dig(props, "schedule", "description").(string); d == "" {
		t.Error("spec.schedule lost its description")
	}
	tmpl := dig(props, "kubernetesJob", "properties", "template").(map[string]any)
	if d, _ := tmpl["description"].(string); d == "" {
		t.Error("spec.kubernetesJob.template lost its own description")
	}
	containers := dig(tmpl, "properties", "spec", "properties", "template", "properties", "spec", "properties", "containers").(map[string]any)
	if _, ok := containers["description"]; ok {
		t.Error("the template's containers keep their description")
	}
	if _, ok := dig(containers, "items", "properties", "image").(map[string]any); !ok {
		t.Error("the template's containers lost their schema")
	}
}

func TestFinishRefusesOtherDocuments(t *testing.T) {
	for _, doc := range []string{"kind: ConfigMap\n", "spec: {versions: [{name: v1}]}\n", "{{{"} {
		if _, err := finish([]byte(doc), []string{"UTC"}); err == nil {
			t.Errorf("finish(%q) succeeded", doc)
		}
	}
}
