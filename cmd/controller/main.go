// Command leasecron is a leader-elected cron controller: replicas compete for
// a Kubernetes Lease (or, outside a cluster, a file lock) and only the leader
// runs the schedule, each slot exactly once. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // --timezone works on images without a zoneinfo database

	"github.com/leasecron/leasecron/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
