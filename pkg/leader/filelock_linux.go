package leader

import "golang.org/x/sys/unix"

// networkFS reports whether dir is on a network file system, by statfs(2)'s
// magic number, and names it.
func networkFS(dir string) (string, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", false
	}
	// Statfs_t.Type is int64, int32 or uint32 depending on the architecture;
	// every magic number fits in 32 bits.
	switch uint32(st.Type) {
	case 0x6969:
		return "nfs", true
	case 0x517b:
		return "smb", true
	case 0xff534d42:
		return "cifs", true
	case 0xfe534d42:
		return "smb2", true
	}
	return "", false
}
