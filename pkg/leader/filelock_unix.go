//go:build unix

package leader

import "golang.org/x/sys/unix"

// dirWritable reports whether this process may create files in dir.
func dirWritable(dir string) bool {
	return unix.Access(dir, unix.W_OK) == nil
}
