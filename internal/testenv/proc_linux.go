package testenv

import "syscall"

// sysProcAttr: the child runs as cred (nil: as us), in its own process group
// (a terminal's Ctrl-C reaches only the test binary, whose Main stops the
// servers cleanly), and is SIGKILLed if the test binary dies first.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
