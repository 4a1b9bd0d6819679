package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/leasecron/leasecron/internal/testenv"
)

// binary is the leasecron binary under test, built once by TestMain exactly
// as the Dockerfile builds it; version is the version it was stamped with.
var (
	binary  string
	version string
	repo    string
	// appendKey is internal/testenv/cmd/appendkey, the command job's
	// program in the kinds scenario, and slotProbe
	// internal/testenv/cmd/slotprobe, the program of probeImage.
	appendKey string
	slotProbe string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	wd, err := os.Getwd()
	if err != nil {
		return 1, err
	}
	repo = filepath.Join(wd, "..", "..")
	dir, err := os.MkdirTemp("", "leasecron-e2e-bin-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	// The Pods run as the chart's non-root user: it must reach the binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		return 1, err
	}
	// The Dockerfile's build command, for the host's platform.
	if binary, version, err = testenv.BuildLeasecron(dir); err != nil {
		return 1, err
	}
	if appendKey, err = testenv.BuildPackage(dir, "./internal/testenv/cmd/appendkey"); err != nil {
		return 1, err
	}
	if slotProbe, err = testenv.BuildPackage(dir, "./internal/testenv/cmd/slotprobe"); err != nil {
		return 1, err
	}
	return testenv.Run(m), nil
}
