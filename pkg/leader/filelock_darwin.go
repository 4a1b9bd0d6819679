package leader

import "golang.org/x/sys/unix"

// networkFS reports whether dir is on a network file system, by statfs(2)'s
// file system type name, and names it.
func networkFS(dir string) (string, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", false
	}
	switch name := unix.ByteSliceToString(st.Fstypename[:]); name {
	case "nfs", "smbfs", "afpfs", "webdav", "cifs":
		return name, true
	}
	return "", false
}
