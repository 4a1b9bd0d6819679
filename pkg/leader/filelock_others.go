//go:build unix && !linux && !darwin

package leader

// networkFS cannot tell a network file system on this platform: a lock
// file's directory is accepted as local.
func networkFS(string) (string, bool) { return "", false }
