//go:build unix && !linux

package testenv

import "syscall"

// sysProcAttr: as on Linux, minus the parent-death signal, which only Linux has.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}
