package kube

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
