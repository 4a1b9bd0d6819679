package spec_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/leasecron/leasecron/pkg/spec"
)

// FieldErrors finds every FieldError, in order, in joined and wrapped
// errors, and nothing in others.
func TestFieldErrors(t *testing.T) {
	a := spec.Errorf("j", "spec.a", "bad")
	b := spec.Errorf("j", "spec.b", "bad")
	c := spec.Errorf("k", "spec.c", "bad")
	err := errors.Join(a, errors.Join(b, errors.New("not a field's")), fmt.Errorf("wrapped: %w", c))
	got := spec.FieldErrors(err)
	var fields []string
	for _, fe := range got {
		fields = append(fields, fe.Job+" "+fe.Field)
	}
	if want := "[j spec.a j spec.b k spec.c]"; fmt.Sprint(fields) != want {
		t.Fatalf("FieldErrors = %v, want %s", fields, want)
	}
	if got := spec.FieldErrors(errors.New("plain")); len(got) != 0 {
		t.Fatalf("FieldErrors of a plain error = %v, want none", got)
	}
	if got := spec.FieldErrors(nil); len(got) != 0 {
		t.Fatalf("FieldErrors(nil) = %v, want none", got)
	}
}
