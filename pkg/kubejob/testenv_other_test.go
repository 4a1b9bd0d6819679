//go:build !linux

package kubejob_test

import (
	"os"
	"testing"
)

// runTests runs the tests. internal/testenv builds on Linux only, so
// outside it there are no tests on a control plane.
func runTests(m *testing.M) { os.Exit(m.Run()) }
