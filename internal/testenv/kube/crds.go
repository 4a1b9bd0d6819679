package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

var (
	crdResource          = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	scheduledJobResource = schema.GroupVersionResource{Group: "leasecron.io", Version: "v1alpha1", Resource: "scheduledjobs"}
)

// InstallCRDs installs the chart's CustomResourceDefinitions
// (charts/leasecron/crds: what helm install installs) with the admin
// client and waits until ScheduledJobs are served.
func (c *ControlPlane) InstallCRDs(t testing.TB) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	files, err := filepath.Glob(filepath.Join(root, "charts", "leasecron", "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	installed := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range yamlDocs(t, b) {
			var obj map[string]any
			if err := yaml.Unmarshal(d, &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if obj["kind"] != "CustomResourceDefinition" {
				continue
			}
			if _, err := dyn.Resource(crdResource).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
				t.Fatalf("install %s: %v", f, err)
			}
			installed++
		}
	}
	if installed == 0 {
		t.Fatalf("no CustomResourceDefinition in charts/leasecron/crds (files %v): run make generate", files)
	}
	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(scheduledJobResource).Namespace("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("ScheduledJobs are not served a minute after the CRD was created: %v", err)
	}
}

// yamlDocs splits a multi-document YAML file.
func yamlDocs(t testing.TB, b []byte) [][]byte {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
}
