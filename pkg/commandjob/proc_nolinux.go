//go:build !linux

package commandjob

import "os/exec"

// waitExit blocks until the program has exited, and reaps it. Outside
// Linux the program is reaped before what is left of its group is
// signalled: should the group be empty by then, its id could in principle
// have been taken by a new process in between (pids are not reused that
// fast in practice).
func waitExit(cmd *exec.Cmd) (reaped bool, err error) {
	return true, cmd.Wait()
}
