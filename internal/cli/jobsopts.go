package cli

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/leasecron/leasecron/internal/cluster"

	"github.com/leasecron/leasecron/pkg/commandjob"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/httpjob"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/kubejob"
	"github.com/leasecron/leasecron/pkg/spec"
	"github.com/leasecron/leasecron/pkg/sqljob"
)

// catalog is the kinds this binary runs. command jobs are refused, with the
// flag that allows them, unless allowCommands;
// kubernetesJob jobs are refused unless kube is set (run with
// --allow-kubernetes-jobs in lease mode).
func catalog(allowCommands bool, kube *kubejob.Kind) *spec.Catalog {
	k := kubejob.Kind{}
	if kube != nil {
		k = *kube
	}
	return spec.NewCatalog(dailystats.Kind{}, sqljob.Kind{}, httpjob.Kind{}, commandjob.Kind{Allowed: allowCommands}, k)
}

// catalog is the kinds these options allow.
func (o *jobsOptions) catalog() *spec.Catalog { return catalog(o.allowCommands, o.kube) }

// jobsOptions say which jobs run, in which zone, with which defaults.
type jobsOptions struct {
	timezone      string
	schedules     []string
	jobsFile      string
	allowCommands bool
	// kube runs kubernetesJob jobs (run --allow-kubernetes-jobs); nil
	// refuses them.
	kube *kubejob.Kind
	// source is --jobs-source; fromCluster is source == "cluster": the
	// cluster's ScheduledJobs are the jobs, the flags add only what they
	// name. run watches them (cluster.Source); the other commands list them
	// once in load, unless watched is set.
	source      string
	fromCluster bool
	watched     bool
	// policy defaults, set by commands that have the flags
	defaults jobs.Policy
	// log is where the jobs' work logs (a command's output).
	log *slog.Logger
}

func (o *jobsOptions) addFlags(fs *pflag.FlagSet, withJobs bool) {
	fs.StringVar(&o.timezone, "timezone", "", "IANA time zone of the schedules and of the dates jobs write, for jobs that name none (default: the local zone, honouring TZ)")
	if withJobs {
		fs.StringVar(&o.source, "jobs-source", "file", "where the jobs come from: file (--jobs-file, or the built-in daily-stats job) or cluster (the ScheduledJob objects of the namespace: run watches the Lease's namespace; other commands read the in-cluster or $KUBECONFIG namespace; --schedule adds daily-stats)")
		fs.StringVar(&o.jobsFile, "jobs-file", "", "YAML file of ScheduledJob documents to run (watched by run: edits apply without a restart); without it, the built-in daily-stats job runs")
		o.addAllowCommands(fs)
		fs.StringArrayVar(&o.schedules, "schedule", nil, "daily-stats=EXPR: the built-in daily-stats job's cron schedule, 5 or 6 fields (seconds optional) or a descriptor like @daily (default daily-stats=50 0 0 * * *; with --jobs-file, giving it adds the job)")
	}
}

func (o *jobsOptions) addAllowCommands(fs *pflag.FlagSet) {
	fs.BoolVar(&o.allowCommands, "allow-command-jobs", false, "run command jobs: programs started as this controller's user, from whoever can edit the jobs (off: such jobs are refused)")
}

func (o *jobsOptions) location() (*time.Location, error) {
	if o.timezone == "" {
		return time.Local, nil
	}
	loc, err := time.LoadLocation(o.timezone)
	if err != nil || strings.EqualFold(o.timezone, "local") {
		return nil, usagef("--timezone %q is not a known time zone: use an IANA name such as UTC, Europe/Berlin or Asia/Shanghai", o.timezone)
	}
	return loc, nil
}

// flagJobs returns the jobs the flags define themselves: daily-stats, when
// no jobs file is given or --schedule names it.
func (o *jobsOptions) flagJobs() ([]spec.ScheduledJob, error) {
	expr, given := dailystats.DefaultSchedule, false
	for _, s := range o.schedules {
		name, e, ok := strings.Cut(s, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, usagef("--schedule %q is not JOB=EXPR: write it like --schedule 'daily-stats=50 0 0 * * *'", s)
		}
		if name != dailystats.Name {
			return nil, usagef("--schedule names unknown job %q: --schedule sets only %s; define other jobs in --jobs-file", name, dailystats.Name)
		}
		expr, given = e, true
	}
	if (o.jobsFile != "" || o.fromCluster) && !given {
		return nil, nil
	}
	return []spec.ScheduledJob{dailystats.Spec(expr)}, nil
}

// jobSet is a loaded, valid set of jobs.
type jobSet struct {
	loc  *time.Location
	defs []jobs.Definition
	// fileSum identifies the jobs file's content the set was built from.
	fileSum [sha256.Size]byte
}

// find returns the definition of name.
func (s *jobSet) find(name string) (jobs.Definition, bool) {
	for _, d := range s.defs {
		if d.Name == name {
			return d, true
		}
	}
	return jobs.Definition{}, false
}

func (s *jobSet) names() string {
	n := make([]string, len(s.defs))
	for i, d := range s.defs {
		n[i] = d.Name
	}
	return strings.Join(n, ", ")
}

// checkSource validates --jobs-source and sets fromCluster.
func (o *jobsOptions) checkSource() error {
	switch o.source {
	case "", "file":
	case "cluster":
		if o.jobsFile != "" {
			return usagef("--jobs-source cluster and --jobs-file are both set: the jobs come from the cluster's ScheduledJobs or from a file, not both")
		}
		o.fromCluster = true
	default:
		return usagef("--jobs-source %q is not valid: use file or cluster", o.source)
	}
	return nil
}

// load reads the jobs file (if any) and the flags' jobs and builds them for
// a ledger of dialect. Every problem is a usage error, one line each. With
// --jobs-source cluster (and not watched), it adds the namespace's
// ScheduledJobs that this controller can run; the others are logged and
// left out, as the leader leaves them out.
func (o *jobsOptions) load(dialect string) (*jobSet, error) {
	if err := o.checkSource(); err != nil {
		return nil, err
	}
	loc, err := o.location()
	if err != nil {
		return nil, err
	}
	list, err := o.flagJobs()
	if err != nil {
		return nil, err
	}
	set := &jobSet{loc: loc}
	if o.jobsFile != "" {
		b, err := os.ReadFile(o.jobsFile)
		if err != nil {
			return nil, usagef("cannot read --jobs-file %s: %v", o.jobsFile, unwrapPathErr(err))
		}
		set.fileSum = sha256.Sum256(b)
		fromFile, err := spec.Load(strings.NewReader(string(b)), o.jobsFile)
		if err != nil {
			return nil, usageError{err}
		}
		list = append(fromFile, list...)
	}
	env := spec.Env{Location: loc, Defaults: o.defaults, Dialect: dialect, Log: o.log}
	defs, err := o.catalog().Definitions(list, env)
	if err != nil {
		return nil, usageError{o.explain(err)}
	}
	if o.fromCluster && !o.watched {
		more, err := o.clusterJobs(env, defs)
		if err != nil {
			return nil, err
		}
		defs = append(defs, more...)
	}
	set.defs = defs
	return set, nil
}

// clusterJobs lists the ScheduledJobs of the namespace that the in-cluster
// config (in a Pod) or $KUBECONFIG names, and builds those this controller
// runs; the flags' jobs (static) keep their names.
func (o *jobsOptions) clusterJobs(env spec.Env, static []jobs.Definition) ([]jobs.Definition, error) {
	log := o.log
	if log == nil {
		log = slog.Default()
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		// Not in a Pod and no kubeconfig: what needs only the database
		// (migrate, status of the flags' jobs) still works.
		log.Warn("--jobs-source cluster, but no cluster here (not in a Pod, no KUBECONFIG): only the flags' jobs are used")
		return nil, nil
	}
	if err != nil {
		return nil, usagef("--jobs-source cluster: no cluster to read ScheduledJobs from (run in a Pod, or set KUBECONFIG): %v", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, usagef("--jobs-source cluster: %v", err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, usagef("cannot build a Kubernetes client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	objs, err := cluster.List(ctx, client, ns)
	if err != nil {
		return nil, err
	}
	taken := map[string]bool{}
	for _, d := range static {
		taken[d.Name] = true
	}
	var defs []jobs.Definition
	for _, sj := range objs {
		d, err := o.catalog().Definition(sj, env)
		if err != nil || taken[sj.Name] {
			log.Warn("ScheduledJob left out: the leader does not run it either", "scheduled_job", sj.Name, "err", err)
			continue
		}
		defs = append(defs, d)
	}
	return defs, nil
}

// explain puts each problem on its own line with its source: the jobs file,
// or the flag for the job a flag defines.
func (o *jobsOptions) explain(err error) error {
	var lines []string
	for _, e := range unjoin(err) {
		var fe *spec.FieldError
		switch {
		case errors.As(e, &fe) && fe.Job == dailystats.Name && fe.Field == "spec.schedule" && len(o.schedules) > 0:
			lines = append(lines, fmt.Sprintf("--schedule %s: %s", dailystats.Name, fe.Msg))
		case o.jobsFile != "":
			lines = append(lines, fmt.Sprintf("%s: %v", o.jobsFile, e))
		default:
			lines = append(lines, e.Error())
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

// unjoin flattens errors.Join trees.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}
