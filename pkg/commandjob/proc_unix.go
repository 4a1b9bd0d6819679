//go:build unix

package commandjob

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
)

// canTerminate: on Unix a program whose time is up is asked to stop
// (SIGTERM) before it is killed.
const canTerminate = true

// setGroup makes the program the leader of a process group of its own, so
// that it and every process it starts (unless one leaves the group) are
// signalled together.
func setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminate sends SIGTERM to the program's process group.
func terminate(cmd *exec.Cmd) error { return signalGroup(cmd, syscall.SIGTERM) }

// kill sends SIGKILL to the program's process group.
func kill(cmd *exec.Cmd) error { return signalGroup(cmd, syscall.SIGKILL) }

// killLeftovers kills what is left of the program's process group once the
// program has exited; the group may well be gone already.
func killLeftovers(cmd *exec.Cmd) {
	_ = signalGroup(cmd, syscall.SIGKILL)
}

// signalGroup sends sig to the process group the program leads (its id is
// the program's pid). A group that is gone is no error.
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	pid := cmd.Process.Pid
	if pid <= 1 { // -0 is our own group, -1 every process we may signal
		return fmt.Errorf("no process group to signal for pid %d", pid)
	}
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill -%s -%d: %w", sigName(sig), pid, err)
	}
	return nil
}

func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGKILL:
		return "KILL"
	}
	return fmt.Sprint(int(sig))
}
