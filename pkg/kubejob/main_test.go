package kubejob_test

import "testing"

func TestMain(m *testing.M) { runTests(m) }
