// Package version holds the build's version, stamped at link time with
// -ldflags "-X github.com/leasecron/leasecron/internal/version.Version=v1.2.3
// -X github.com/leasecron/leasecron/internal/version.Commit=abc123".
package version

// Stamped at link time; these are the only package-level variables the
// binary has, and nothing writes them at run time.
var (
	Version = "dev"
	Commit  = "unknown"
)
