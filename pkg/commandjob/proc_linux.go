//go:build linux

package commandjob

import (
	"errors"
	"os/exec"

	"golang.org/x/sys/unix"
)

// waitExit blocks until the program has exited. On Linux it leaves the
// program unreaped (a zombie, which keeps its pid and so its process
// group's id from being reused) and reports reaped false: the caller
// signals what is left of the group, then reaps with cmd.Wait. Should
// waiting without reaping fail, it reaps.
func waitExit(cmd *exec.Cmd) (reaped bool, err error) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		switch {
		case err == nil:
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return true, cmd.Wait()
		}
	}
}
