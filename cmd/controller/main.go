// Command leasecron is a leader-elected cron controller: replicas compete for
// a Kubernetes Lease (or, outside a cluster, a file lock) and only the leader
// runs the schedule, each slot exactly once. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	_ "time/tzdata" // --timezone works on images without a zoneinfo database

	"github.com/leasecron/leasecron/internal/cli"
)

func main() {
	// Most of a leader's heap after start-up is garbage from reading every
	// job's ledger: collecting at 50% growth instead of 100% keeps an idle
	// leader with 1,000 jobs on PostgreSQL at about 53 MiB instead of 66
	// (BENCHMARKS.md). GOGC in the environment wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
