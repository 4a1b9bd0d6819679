//go:build !unix

package commandjob

import (
	"errors"
	"os"
	"os/exec"
)

// canTerminate: without Unix signals there is no asking a program to stop,
// only killing it.
const canTerminate = false

// setGroup does nothing: outside Unix there are no process groups, and
// only the program itself is killed.
func setGroup(*exec.Cmd) {}

// terminate kills the program: there is no SIGTERM here.
func terminate(cmd *exec.Cmd) error { return kill(cmd) }

// kill kills the program (not what it started).
func kill(cmd *exec.Cmd) error {
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// killLeftovers does nothing: the processes the program started are not
// known here.
func killLeftovers(*exec.Cmd) {}
