// Command embedded is a small HTTP service that embeds leasecron's engine
// instead of running a scheduler in every replica. Run several copies on one
// host: each serves HTTP, the copy holding the file lock runs the jobs, and
// a ledger in the database makes each slot of the tally job count once.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/leader"
	"github.com/leasecron/leasecron/pkg/metrics"
	"github.com/leasecron/leasecron/pkg/model"
)

// jobTimeout bounds one attempt of a slot; the database ends any statement
// that runs longer, and a transaction left idle (a frozen copy) after idleTx.
const (
	jobTimeout = 10 * time.Second
	idleTx     = 15 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// JSON logs, one event per line, with durations in readable units.
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			return slog.String(a.Key, a.Value.Duration().String())
		}
		return a
	}}))
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("embedded", flag.ContinueOnError)
	addr := fs.String("addr", env("EMBEDDED_ADDR", ":8080"), "HTTP listen address (/tally, /metrics, /healthz)")
	dsn := fs.String("dsn", env("EMBEDDED_DSN", "sqlite://embedded.db"), "database: sqlite://PATH, postgres://... or mysql://...")
	lockFile := fs.String("lock-file", env("EMBEDDED_LOCK_FILE", "embedded.lock"), "lock file shared by every copy on this host")
	identity := fs.String("identity", env("EMBEDDED_IDENTITY", fmt.Sprintf("%s-%d", host, os.Getpid())), "this copy's name in the election and the ledger")
	if err := fs.Parse(os.Args[1:]); errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	} else if err != nil {
		os.Exit(2) // fs has said what is wrong
	}
	if err := run(ctx, *addr, *dsn, *lockFile, *identity, log.With("identity", *identity)); err != nil {
		log.Error("exiting", "err", err)
		stop()
		os.Exit(1)
	}
}

// env returns the environment variable key, or def when it is unset.
func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func run(ctx context.Context, addr, rawDSN, lockFile, identity string, log *slog.Logger) error {
	dsn, err := model.ParseDSN(rawDSN)
	if err != nil {
		return fmt.Errorf("-dsn: %w", err)
	}
	// One host, several copies: the file lock elects the copy that schedules.
	elector, err := leader.NewFileLock(lockFile, identity, log)
	if err != nil {
		return fmt.Errorf("-lock-file: %w", err)
	}
	defs, err := definitions(log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	defer ln.Close()

	db, err := model.OpenWith(ctx, dsn, model.OpenOptions{Wait: 30 * time.Second, Log: log,
		Limits: model.SessionLimits{IdleInTransaction: idleTx, Statement: jobTimeout}})
	if err != nil {
		return err
	}
	defer model.Close(db)
	// The ledger (job_runs, leader_terms) and tally's own tables, under the
	// migration lock, so copies starting together do not collide.
	if err := jobs.Migrate(ctx, db, defs); err != nil {
		return fmt.Errorf("migrate %s: %w", dsn, dsn.Scrub(err))
	}

	reg := prometheus.NewRegistry() // private: nothing registers globally
	m := metrics.New(reg)
	m.JobsLoaded.Set(float64(len(defs)))
	sched, err := jobs.New(db, identity, defs, jobs.Options{Log: log, Metrics: m, ShutdownGrace: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("jobs: %w", err)
	}

	srv := &http.Server{Handler: routes(db, elector, reg), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("http server listening", "addr", ln.Addr().String())
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	// Campaign; while leading, begin a term in the database (the fence) and
	// run the jobs; until ctx ends (SIGTERM), letting running slots finish.
	// Rejoin: a copy that lost the database lets go of the lock and asks
	// again a second later, so a copy that can reach it leads meanwhile.
	err = sched.Run(ctx, elector, jobs.RunOptions{Rejoin: time.Second, Scrub: dsn.Scrub, OnLead: m.OnLead})
	if err != nil {
		return fmt.Errorf("scheduler: %w", err) // fenced or lost the lock: let a supervisor restart us
	}
	log.Info("shut down")
	return nil
}

// definitions are the service's jobs.
func definitions(log *slog.Logger) ([]jobs.Definition, error) {
	everySecond, err := jobs.ParseSchedule("* * * * * *", time.UTC) // six fields: seconds first
	if err != nil {
		return nil, err
	}
	every5s, err := jobs.ParseSchedule("*/5 * * * * *", time.UTC)
	if err != nil {
		return nil, err
	}
	// notify shows a plain jobs.Job: work outside the database is delivered
	// at least once, so it sends slot.Key for the receiver to dedupe on.
	notify := jobs.Func(func(ctx context.Context, slot jobs.Slot) error {
		log.Info("would call out", "idempotency_key", slot.Key)
		return nil
	})
	return []jobs.Definition{
		{Name: "tally", Schedule: everySecond, Work: tally{}, Policy: jobs.Policy{Timeout: jobTimeout}},
		{Name: "notify", Schedule: every5s, Work: notify, Policy: jobs.Policy{Timeout: jobTimeout}},
	}, nil
}

// routes serves the tally, the metrics and the election's health.
func routes(db *gorm.DB, elector *leader.FileLock, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /tally", func(w http.ResponseWriter, r *http.Request) {
		var out struct {
			N     int64 `json:"n"`
			Slots int64 `json:"slots"`
		}
		// One statement, so both numbers come from one snapshot.
		q := "SELECT n, (SELECT COUNT(*) FROM tally_slots) AS slots FROM tallies WHERE id = 1"
		if err := db.WithContext(r.Context()).Raw(q).Scan(&out).Error; err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := elector.Healthy(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
