// Command appendkey is a command job's program for tests: it appends the
// slot's key (LEASECRON_KEY) and a newline to the file its one argument
// names, creating it if need be, in one write to a file opened with
// O_APPEND, so concurrent runs never interleave their lines. It exits 0
// once the line is written, and 1 (saying why) without the variable or
// when the file cannot be written.
//
//	appendkey FILE
//
// The pod runner runs the controller, and so its command jobs, as local
// processes: the test reads FILE afterwards to see which slots ran, and
// how often.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "appendkey:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want one argument, the file; got %q", args)
	}
	key := os.Getenv("LEASECRON_KEY")
	if key == "" {
		return fmt.Errorf("LEASECRON_KEY is not set")
	}
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
