package sqljob_test

import (
	"testing"

	"github.com/leasecron/leasecron/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
