package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// ToolsDirEnv overrides where the test tool binaries are looked up
// (the same variable hack/tools/build.sh writes to).
const ToolsDirEnv = "LEASECRON_TOOLS_DIR"

// modulePath is the main module's path; ToolPath looks for the go.mod declaring it.
const modulePath = "github.com/leasecron/leasecron"

// ToolPath returns the absolute path of the tool binary name (etcd, kube-apiserver,
// kube-controller-manager, kubectl, helm) built by hack/tools/build.sh: it is
// $LEASECRON_TOOLS_DIR/<name> when that variable is set, otherwise
// <repo>/.cache/tools/bin/<name>, where <repo> is found by walking up from the
// working directory to the go.mod of module github.com/leasecron/leasecron.
// The error (binary missing or not executable) names hack/tools/build.sh.
func ToolPath(name string) (string, error) {
	dir, err := toolsDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return "", fmt.Errorf("kube: test tool %q not found at %s (%v): build the test tools with hack/tools/build.sh", name, p, errors.Unwrap(err))
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("kube: test tool %s is not an executable file: rebuild it with hack/tools/build.sh", p)
	}
	return p, nil
}

func toolsDir() (string, error) {
	if d := os.Getenv(ToolsDirEnv); d != "" {
		return filepath.Abs(d)
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "tools", "bin"), nil
}

// repoRoot walks up from the working directory (a test's package directory) to
// the directory whose go.mod declares the leasecron module. Nested modules such
// as hack/tools/kube are skipped; if no such go.mod is found the nearest go.mod
// wins.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kube: locating repo root: %w", err)
	}
	nearest := ""
	for dir := wd; ; dir = filepath.Dir(dir) {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if nearest == "" {
				nearest = dir
			}
			if declaresModule(data, modulePath) {
				return dir, nil
			}
		}
		if parent := filepath.Dir(dir); parent == dir {
			break
		}
	}
	if nearest != "" {
		return nearest, nil
	}
	return "", fmt.Errorf("kube: no go.mod above %s; set %s to the directory hack/tools/build.sh built into", wd, ToolsDirEnv)
}

func declaresModule(gomod []byte, path string) bool {
	for _, line := range bytes.Split(gomod, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) >= 2 && string(f[0]) == "module" && string(bytes.Trim(f[1], `"`)) == path {
			return true
		}
	}
	return false
}

// BuildTool is ToolPath for a tool that hack/tools/build.sh builds only when
// asked for by name (promtool): a missing binary is built first, which
// takes minutes on a cold cache (the build serialises with any other run of
// build.sh on its lock file).
func BuildTool(name string) (string, error) {
	if p, err := ToolPath(name); err == nil {
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(root, "hack", "tools", "build.sh"), name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("kube: build the test tool %s with hack/tools/build.sh: %w\n%s", name, err, out)
	}
	return ToolPath(name)
}

// RenderChart runs `helm template` on the chart in dir, as release x in
// namespace, with values (given on stdin: helm splits a -f path at commas),
// and returns the rendered objects; a template that fails returns helm's
// message.
func RenderChart(dir, namespace string, values map[string]any) ([]map[string]any, error) {
	helm, err := ToolPath("helm")
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("kube: chart values: %w", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(helm, "template", "x", dir, "-n", namespace, "-f", "-")
	cmd.Stdin, cmd.Stderr = bytes.NewReader(b), &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm template: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var objs []map[string]any
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("kube: parse the rendered chart: %w", err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
}
