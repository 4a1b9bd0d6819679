package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// moduleRoot returns the directory of the module the tests run in.
func moduleRoot() (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("testenv: locate the module: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(gomod))), nil
}

// goBuild builds the main package pkg of the module at repo into out, with
// CGO off and -trimpath, and any extra build flags.
func goBuild(repo, out, pkg string, flags ...string) error {
	args := append(append([]string{"build", "-trimpath"}, flags...), "-o", out, pkg)
	build := exec.Command("go", args...)
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: build %s: %w\n%s", pkg, err, msg)
	}
	return nil
}

// BuildLeasecron builds the leasecron binary into dir exactly as the
// Dockerfile builds it (CGO off, -trimpath, stripped, version and commit
// stamped), so tests run what the image ships. It returns the binary's path
// and the version it carries ("test-<commit>").
func BuildLeasecron(dir string) (path, version string, err error) {
	repo, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	commit := "unknown"
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	version = "test-" + commit
	path = filepath.Join(dir, "leasecron")
	const pkg = "github.com/leasecron/leasecron/internal/version"
	if err := goBuild(repo, path, "./cmd/controller",
		"-ldflags", "-s -w -X "+pkg+".Version="+version+" -X "+pkg+".Commit="+commit); err != nil {
		return "", "", err
	}
	return path, version, nil
}

// BuildPackage builds another main package of the module, pkg (a path
// relative to the module's root, such as "./examples/embedded"), into dir
// with CGO off and -trimpath, and returns the binary's path: dir and pkg's
// last element.
func BuildPackage(dir, pkg string) (path string, err error) {
	repo, err := moduleRoot()
	if err != nil {
		return "", err
	}
	path = filepath.Join(dir, filepath.Base(filepath.Clean(pkg)))
	if err := goBuild(repo, path, pkg); err != nil {
		return "", err
	}
	return path, nil
}

// Also is another main package of the module that MainWithLeasecron builds
// beside leasecron (with BuildPackage) and points Path at: a program a test
// runs as a command job or as a Pod's container.
type Also struct {
	Pkg  string // relative to the module's root, e.g. "./internal/testenv/cmd/appendkey"
	Path *string
}

// MainWithLeasecron is Main for packages that run the leasecron binary: it
// builds it with BuildLeasecron into a temp dir, points *bin at it (and each
// also's Path at its program), runs the tests, removes the dir and exits
// with the tests' code. The dir is readable by every user: the pod runner
// runs a Pod's containers as their securityContext's user when the tests
// run as root.
func MainWithLeasecron(m *testing.M, bin *string, also ...Also) {
	mainWithBinary(m, bin, func(dir string) (string, error) {
		path, _, err := BuildLeasecron(dir)
		for _, a := range also {
			if err == nil {
				*a.Path, err = BuildPackage(dir, a.Pkg)
			}
		}
		return path, err
	})
}

// MainWithPackage is MainWithLeasecron for another main package of the
// module, built with BuildPackage.
func MainWithPackage(m *testing.M, pkg string, bin *string) {
	mainWithBinary(m, bin, func(dir string) (string, error) { return BuildPackage(dir, pkg) })
}

func mainWithBinary(m *testing.M, bin *string, build func(dir string) (string, error)) {
	dir, err := os.MkdirTemp("", "leasecron-bin-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		*bin, err = build(dir)
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
