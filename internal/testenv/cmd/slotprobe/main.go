// Command slotprobe is a container's program for tests that run Pods
// through the pod runner (kube.PodRunner): it says what it was given, waits
// if told to, and exits with the status it is told.
//
//	slotprobe [--wait-for=PATH] [--exit=N] [--exit-file=PATH]
//
// It prints "env NAME=VALUE" for each variable of its environment, sorted,
// then "args ARG..." with its arguments. With --wait-for it says "waiting
// for PATH" and waits until PATH exists (checking every 20ms; the pod
// runner runs the program as a local process, so the test creates the file
// when it wants the program to go on). It exits with the status in the
// file --exit-file names, if that file exists, else with --exit (default 0),
// after saying "exit N". SIGTERM ends it at once, as it ends any program
// that does not handle it.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	waitFor := flag.String("wait-for", "", "wait until this file exists")
	code := flag.Int("exit", 0, "the exit status")
	codeFile := flag.String("exit-file", "", "a file holding the exit status, if it exists")
	flag.Parse()

	env := os.Environ()
	slices.Sort(env)
	for _, kv := range env {
		fmt.Println("env", kv)
	}
	fmt.Println("args", strings.Join(os.Args[1:], " "))
	if *waitFor != "" {
		fmt.Println("waiting for", *waitFor)
		for {
			if _, err := os.Stat(*waitFor); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if *codeFile != "" {
		if b, err := os.ReadFile(*codeFile); err == nil {
			n, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				fmt.Fprintf(os.Stderr, "slotprobe: %s: %v\n", *codeFile, err)
				os.Exit(2)
			}
			*code = n
		}
	}
	fmt.Println("exit", *code)
	os.Exit(*code)
}
