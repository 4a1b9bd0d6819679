package commandjob_test

import (
	"testing"

	"github.com/leasecron/leasecron/internal/testenv"
)

// runTests runs the tests with testenv's database servers, which the
// engine tests use, and stops them afterwards.
func runTests(m *testing.M) { testenv.Main(m) }
