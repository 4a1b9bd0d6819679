package leader

import (
	"path/filepath"

	"golang.org/x/sys/windows"
)

// dirWritable cannot tell without writing on Windows (its ACLs are not
// mode bits): a directory is accepted, and a lock file that cannot be
// created fails Run with the operating system's error.
func dirWritable(string) bool { return true }

// networkFS reports whether dir is on a network share: a UNC path
// (\\server\share, \\?\UNC\server\share) or a drive that GetDriveType
// reports as DRIVE_REMOTE (a mapped network drive).
func networkFS(dir string) (string, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	vol := filepath.VolumeName(abs)
	if isUNC(vol) {
		return "UNC path " + vol, true
	}
	root, err := windows.UTF16PtrFromString(vol + `\`)
	if err != nil {
		return "", false
	}
	if windows.GetDriveType(root) == windows.DRIVE_REMOTE {
		return "network drive " + vol, true
	}
	return "", false
}
