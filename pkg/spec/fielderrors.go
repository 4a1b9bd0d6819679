package spec

import "errors"

// FieldErrors returns the FieldErrors in err, in order, looking into errors
// joined with errors.Join (as Catalog.Definitions and a Kind's Build
// return them), so that a caller can map each field to its own words (the
// CLI, a flag).
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var fe *FieldError
	switch j, joined := err.(interface{ Unwrap() []error }); {
	case err == nil:
	case joined:
		for _, e := range j.Unwrap() {
			out = append(out, FieldErrors(e)...)
		}
	case errors.As(err, &fe):
		out = append(out, fe)
	}
	return out
}
