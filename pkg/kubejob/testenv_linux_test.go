package kubejob_test

import (
	"testing"

	"github.com/leasecron/leasecron/internal/testenv"
)

// probe is the Pods' program: internal/testenv/cmd/slotprobe, built once
// for the package's tests.
var probe string

// runTests builds the probe, runs the tests with testenv's servers and
// stops them afterwards.
func runTests(m *testing.M) { testenv.MainWithPackage(m, "./internal/testenv/cmd/slotprobe", &probe) }
