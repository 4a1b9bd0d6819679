package spec

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ReadValueFile reads a value a kind takes from a file (a mounted Secret):
// the file's content without trailing newlines. Its errors name the file,
// never the content, so they can be logged and recorded.
func ReadValueFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w: mount the Secret at that path, or fix the path", path, UnwrapPath(err))
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// UnwrapPath drops the operation and path an *os.PathError repeats, for
// messages that name the path themselves.
func UnwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
