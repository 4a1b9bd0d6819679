//go:build unix && !linux

package commandjob_test

import (
	"os"
	"testing"
)

// runTests runs the tests. internal/testenv builds on Linux only, so
// outside it there are no engine tests, and no servers to stop.
func runTests(m *testing.M) { os.Exit(m.Run()) }
