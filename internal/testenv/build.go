package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildLeasecron builds the leasecron binary into dir exactly as the
// Dockerfile builds it (CGO off, -trimpath, stripped, version and commit
// stamped), so tests run what the image ships. It returns the binary's path
// and the version it carries ("test-<commit>").
func BuildLeasecron(dir string) (path, version string, err error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("testenv: locate the module: %w", err)
	}
	repo := filepath.Dir(strings.TrimSpace(string(gomod)))
	commit := "unknown"
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	version = "test-" + commit
	path = filepath.Join(dir, "leasecron")
	const pkg = "github.com/leasecron/leasecron/internal/version"
	build := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -X "+pkg+".Version="+version+" -X "+pkg+".Commit="+commit,
		"-o", path, "./cmd/controller")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("testenv: build leasecron: %w\n%s", err, out)
	}
	return path, version, nil
}

// MainWithLeasecron is Main for packages that run the leasecron binary: it
// builds it with BuildLeasecron into a temp dir, points *bin at it, runs the
// tests, removes the dir and exits with the tests' code.
func MainWithLeasecron(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "leasecron-bin-")
	if err == nil {
		*bin, _, err = BuildLeasecron(dir)
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = Run(m)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}
