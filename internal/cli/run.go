package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gorm.io/gorm"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/leasecron/leasecron/internal/cluster"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/kubejob"
	"github.com/leasecron/leasecron/pkg/leader"
	"github.com/leasecron/leasecron/pkg/metrics"
	"github.com/leasecron/leasecron/pkg/model"
	"github.com/leasecron/leasecron/pkg/spec"
)

const saNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// runOptions are the flags of `leasecron run`.
type runOptions struct {
	db   dbOptions
	jobs jobsOptions
	log  logOptions

	mode           string
	lockFile       string
	identity       string
	kubeconfig     string
	leaseName      string
	leaseNamespace string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration

	catchUpWindow time.Duration
	catchUpLimit  int
	jobTimeout    time.Duration
	retention     time.Duration
	shutdownGrace time.Duration
	httpAddr      string
	dbLostTimeout time.Duration
	allowKubeJobs bool
}

func (o *runOptions) addFlags(fs *pflag.FlagSet) {
	o.db.addFlags(fs)
	o.jobs.addFlags(fs, true)
	o.log.addFlags(fs)
	fs.StringVar(&o.mode, "mode", "auto", "leader election: lease (Kubernetes Lease), filelock (one host only), or auto (lease in a cluster or with --kubeconfig, else filelock)")
	fs.StringVar(&o.lockFile, "lock-file", "leasecron.lock", "filelock mode: the lock file; every process sharing it must run on this host")
	fs.StringVar(&o.identity, "identity", "", "this process's name in the election (default: $POD_NAME, else hostname-pid)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "lease mode: kubeconfig file (default: in-cluster config; in lease mode also $KUBECONFIG)")
	fs.StringVar(&o.leaseName, "lease-name", "leasecron", "lease mode: name of the Lease")
	fs.StringVar(&o.leaseNamespace, "lease-namespace", "", "lease mode: namespace of the Lease (default: $POD_NAMESPACE, the service account's namespace, else default)")
	fs.DurationVar(&o.leaseDuration, "lease-duration", leader.DefaultLeaseDuration, "lease mode: how long followers wait after the last renewal before taking over")
	fs.DurationVar(&o.renewDeadline, "renew-deadline", leader.DefaultRenewDeadline, "lease mode: how long the leader retries renewing before it gives up (below --lease-duration)")
	fs.DurationVar(&o.retryPeriod, "retry-period", leader.DefaultRetryPeriod, "lease mode: wait between attempts to acquire or renew")
	fs.DurationVar(&o.catchUpWindow, "catch-up-window", 48*time.Hour, "how far back a new leader runs missed slots")
	fs.IntVar(&o.catchUpLimit, "catch-up-limit", jobs.DefaultCatchUpLimit, "how many missed slots per job a new leader runs at most (the most recent ones); 0 disables catch-up")
	fs.DurationVar(&o.jobTimeout, "job-timeout", 10*time.Minute, "time limit of one attempt of a slot")
	fs.DurationVar(&o.retention, "history-retention", jobs.DefaultHistoryRetention, "how long finished ledger rows are kept, for jobs that set no historyRetention; the leader prunes older ones (never a job's last success or a running slot); 0 keeps them forever")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace-period", 30*time.Second, "on SIGTERM, how long running slots may finish before the leader lets go")
	fs.StringVar(&o.httpAddr, "http-addr", ":8080", "address of /healthz, /readyz and /metrics (port 0 picks a free port)")
	fs.BoolVar(&o.allowKubeJobs, "allow-kubernetes-jobs", false, "lease mode: run kubernetesJob jobs, one batch/v1 Job per slot in the Lease's namespace; whoever can define jobs can then run any Pod there (off: such jobs are refused)")
	fs.IntVar(&o.db.maxConns, "database-max-connections", model.DefaultMaxConns, "how many connections the jobs may hold at once (work in the ledger's transaction holds one while it runs; the rest wait for one); the leader's own checks use 2 more")
	fs.DurationVar(&o.dbLostTimeout, "database-lost-timeout", time.Minute, "a leader that cannot begin its term or reach the database for this long lets go, so a replica that can reach it leads: exit 1 in lease mode, release the lock and wait in filelock mode")
}

func newRunCmd() *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the controller: elect a leader and run the schedule on it",
		Long: `Run the controller. Every replica serves health and metrics; the one that wins the
election runs the schedule. In filelock mode the lock guards one host only: every
process that shares the lock file must run on the same machine.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.Flags(), cmd.ErrOrStderr())
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments (got %q): see 'leasecron %s --help'", cmd.Name(), args, cmd.Name())
	}
	return nil
}

// electorPlan is the validated election configuration, before any I/O.
type electorPlan struct {
	mode      string
	rest      *rest.Config
	namespace string
}

func (o *runOptions) planElection() (electorPlan, error) {
	p := electorPlan{mode: o.mode}
	if err := leader.ValidateTimings(o.leaseDuration, o.renewDeadline, o.retryPeriod); err != nil {
		return p, usageError{err}
	}
	switch o.mode {
	case "auto":
		if cfg, err := rest.InClusterConfig(); err == nil {
			p.mode, p.rest = "lease", cfg
		} else if o.kubeconfig != "" {
			p.mode = "lease"
		} else {
			p.mode = "filelock"
		}
	case "lease", "filelock":
	default:
		return p, usagef("--mode %q is not valid: use auto, lease or filelock", o.mode)
	}
	if p.mode == "filelock" {
		if err := leader.CheckLockFile(o.lockFile); err != nil {
			return p, usageError{err}
		}
		return p, nil
	}
	if p.rest == nil {
		cfg, err := o.restConfig()
		if err != nil {
			return p, err
		}
		p.rest = cfg
	}
	p.namespace = o.namespace()
	if o.leaseName == "" {
		return p, usagef("--lease-name is empty: give the Lease a name")
	}
	return p, nil
}

func (o *runOptions) restConfig() (*rest.Config, error) {
	if o.kubeconfig != "" {
		if _, err := os.Stat(o.kubeconfig); err != nil {
			return nil, usagef("--kubeconfig %s cannot be read: %v", o.kubeconfig, unwrapPathErr(err))
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, usagef("--kubeconfig %s is not usable: %v", o.kubeconfig, err)
		}
		return cfg, nil
	}
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, usagef("--mode lease needs a cluster: not running in one and no kubeconfig found; give --kubeconfig, set KUBECONFIG, or use --mode filelock")
	}
	return cfg, nil
}

func (o *runOptions) namespace() string {
	if o.leaseNamespace != "" {
		return o.leaseNamespace
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(saNamespaceFile); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b))
	}
	return "default"
}

func (o *runOptions) identityOrDefault() string {
	if o.identity != "" {
		return o.identity
	}
	if pod := os.Getenv("POD_NAME"); pod != "" {
		return pod
	}
	host, _ := os.Hostname()
	if o.mode == "filelock" {
		return fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

func (o *runOptions) run(ctx context.Context, fs *pflag.FlagSet, stderr io.Writer) error {
	// Validate everything before anything is opened or written.
	log, err := o.log.logger(stderr)
	if err != nil {
		return err
	}
	dsn, err := o.db.parse(fs)
	if err != nil {
		return err
	}
	if err := positive(map[string]time.Duration{
		"catch-up-window": o.catchUpWindow, "job-timeout": o.jobTimeout, "shutdown-grace-period": o.shutdownGrace,
		"database-lost-timeout": o.dbLostTimeout,
	}); err != nil {
		return err
	}
	if o.catchUpLimit < 0 {
		return usagef("--catch-up-limit must be 0 or more (got %d)", o.catchUpLimit)
	}
	if o.retention < 0 {
		return usagef("--history-retention must be 0 (keep forever) or a positive duration such as 168h (got %s)", o.retention)
	}
	o.jobs.watched = true // the cluster source watches the ScheduledJobs
	if err := o.jobs.checkSource(); err != nil {
		return err
	}
	if o.db.maxConns < 1 {
		return usagef("--database-max-connections must be 1 or more (got %d)", o.db.maxConns)
	}
	o.jobs.defaults = jobs.Policy{CatchUpWindow: o.catchUpWindow, CatchUpLimit: o.catchUpLimit, Timeout: o.jobTimeout, HistoryRetention: o.retention}
	if o.catchUpLimit == 0 {
		o.jobs.defaults.CatchUpLimit = -1 // disabled
	}
	if o.retention == 0 {
		o.jobs.defaults.HistoryRetention = jobs.KeepHistory
	}
	o.jobs.log = log
	if _, _, err := net.SplitHostPort(o.httpAddr); err != nil {
		return usagef("--http-addr %q is not HOST:PORT (for example :8080, or 127.0.0.1:0 for a free port)", o.httpAddr)
	}
	plan, err := o.planElection()
	if err != nil {
		return err
	}
	o.mode = plan.mode
	if o.jobs.fromCluster && o.mode != "lease" {
		return usagef("--jobs-source cluster needs lease mode (a cluster): give --mode lease with --kubeconfig, or run in a cluster")
	}
	if o.allowKubeJobs {
		if o.mode != "lease" {
			return usagef("--allow-kubernetes-jobs needs lease mode (a cluster): give --mode lease with --kubeconfig, or run in a cluster")
		}
		cfg := rest.CopyConfig(plan.rest)
		// client-go's default, 5 requests/s with a burst of 10, puts the
		// 100th of 100 Jobs due at once 18 s late (BENCHMARKS.md, cronjob).
		cfg.QPS, cfg.Burst = 50, 100
		client, err := kubejob.NewJobs(cfg, plan.namespace)
		if err != nil {
			return usagef("cannot build a Kubernetes client: %v", err)
		}
		o.jobs.kube = &kubejob.Kind{Jobs: client, Namespace: plan.namespace}
	}
	set, err := o.jobs.load(dsn.Dialect)
	if err != nil {
		return err
	}
	identity := o.identityOrDefault()
	log = log.With("identity", identity)
	if o.mode == "filelock" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		log.Warn("filelock mode inside a Kubernetes cluster: the lock excludes only processes on this node; use --mode lease")
	}
	log.Info("election mode chosen", "mode", o.mode, "requested", fs.Lookup("mode").Value.String())

	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return usagef("cannot listen on --http-addr %s: %v (is another process using the port? pick another, or port 0 for a free one)", o.httpAddr, unwrapOpErr(err))
	}
	defer ln.Close()

	// A leader cut off in the middle of a transaction must not hold its
	// locks on the server for hours: the server ends such a session after
	// a lease duration idle, and any statement after the job timeout.
	o.db.limits = model.SessionLimits{IdleInTransaction: o.leaseDuration, Statement: o.jobTimeout}
	db, err := o.db.openMigrated(ctx, dsn, set.defs, log)
	if err != nil {
		return err
	}
	defer model.Close(db)
	// The term and the database watch have a pool of their own, so that
	// jobs holding every connection of theirs cannot starve them.
	control, err := model.OpenWith(ctx, dsn, model.OpenOptions{Wait: o.db.connectTimeout, Log: log, Limits: o.db.limits, MaxConns: controlConns})
	if err != nil {
		return err
	}
	defer model.Close(control)

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	elector, err := o.elector(plan, identity, log)
	if err != nil {
		return err
	}

	var observed jobs.Metrics = m
	onLead := m.OnLead
	var src *cluster.Source
	if o.jobs.fromCluster {
		if src, err = o.clusterSource(ctx, plan, dsn, set, db, m, log); err != nil {
			return err
		}
		observed = src.Observe(m)
		onLead = func(leading bool) { m.OnLead(leading); src.OnLead(leading) }
	}
	sched, err := jobs.New(db, identity, set.defs, jobs.Options{ShutdownGrace: o.shutdownGrace, Log: log, Metrics: observed})
	if err != nil {
		return err
	}
	m.JobsLoaded.Set(float64(len(set.defs)))
	log.Info("jobs loaded", "jobs", len(set.defs), "names", set.names())
	if src != nil {
		// The cluster's jobs are in the set before this process campaigns:
		// a new leader catches up their missed slots as it does a file's.
		ready, failed := make(chan struct{}), make(chan error, 1)
		go func() { failed <- src.Run(ctx, sched, ready) }()
		select {
		case <-ready:
		case err := <-failed:
			log.Error("exiting: cannot watch ScheduledJobs", "err", err)
			return errReported
		case <-ctx.Done():
			return nil
		}
	}
	if o.jobs.jobsFile != "" {
		w := &jobsWatcher{opts: &o.jobs, dialect: dsn.Dialect, sched: sched, db: db, last: set.fileSum, metrics: m, log: log, scrub: dsn.Scrub}
		go w.watch(ctx, jobsFilePoll)
	}

	srv := &http.Server{Handler: o.handler(db, elector, reg), ReadHeaderTimeout: 5 * time.Second}
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

	ro := jobs.RunOptions{
		DatabaseLostTimeout: o.dbLostTimeout, Scrub: dsn.Scrub,
		OnLead: onLead, Control: control,
	}
	if o.mode == "filelock" {
		ro.Rejoin = filelockRejoin // release the lock and wait; a Pod restarts instead
	}
	err = sched.Run(ctx, elector, ro)
	switch {
	case errors.Is(err, leader.ErrLeadershipLost), errors.Is(err, jobs.ErrFenced):
		log.Error("exiting: this process no longer leads", "err", err)
		return errReported
	case errors.Is(err, jobs.ErrDatabaseLost):
		log.Error("exiting: let go of leadership, this process cannot reach the database", "err", err)
		return errReported
	case err != nil:
		log.Error("exiting", "err", err)
		return errReported
	}
	log.Info("shut down")
	return nil
}

// clusterSource checks that the namespace's ScheduledJobs can be read and
// returns their source, its jobs built as a jobs file's are.
func (o *runOptions) clusterSource(ctx context.Context, plan electorPlan, dsn model.DSN, set *jobSet, db *gorm.DB, m *metrics.Metrics, log *slog.Logger) (*cluster.Source, error) {
	cfg := rest.CopyConfig(plan.rest)
	cfg.QPS, cfg.Burst = 50, 100 // the source limits its own writes (cluster.Options.StatusQPS)
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, usagef("cannot build a Kubernetes client: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cluster.Check(cctx, client, plan.namespace); err != nil {
		log.Error("exiting", "err", err)
		return nil, errReported
	}
	return cluster.New(cluster.Options{
		Client: client, Namespace: plan.namespace,
		Catalog: o.jobs.catalog(),
		Env:     spec.Env{Location: set.loc, Defaults: o.jobs.defaults, Dialect: dsn.Dialect, Log: log},
		Static:  set.defs, DB: db, Log: log, Scrub: dsn.Scrub,
		OnApplied: func(n int) { m.JobsLoaded.Set(float64(n)) },
	})
}

// controlConns is the size of the pool for the leader's own statements.
const controlConns = 2

// filelockRejoin is how long a process that let go of the file lock for want
// of a database waits before it asks for the lock again.
const filelockRejoin = time.Second

func unwrapOpErr(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}

func (o *runOptions) elector(p electorPlan, identity string, log *slog.Logger) (leader.Elector, error) {
	if p.mode == "filelock" {
		e, err := leader.NewFileLock(o.lockFile, identity, log)
		if err != nil {
			return nil, usageError{err}
		}
		return e, nil
	}
	client, err := leader.NewKubeClient(p.rest, p.namespace, "leasecron")
	if err != nil {
		return nil, usagef("cannot build a Kubernetes client: %v", err)
	}
	e, err := leader.NewLease(leader.LeaseConfig{
		Client: client, Namespace: p.namespace, Name: o.leaseName, Identity: identity,
		LeaseDuration: o.leaseDuration, RenewDeadline: o.renewDeadline, RetryPeriod: o.retryPeriod,
		Events: client, Log: log,
	})
	if err != nil {
		return nil, usageError{err}
	}
	return e, nil
}

func (o *runOptions) handler(db *gorm.DB, e leader.Elector, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := e.Healthy(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := model.Ping(ctx, db); err != nil {
			http.Error(w, "database unreachable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}
