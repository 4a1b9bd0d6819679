// Package cluster makes a namespace's ScheduledJob objects the job set of a
// running controller.
//
// Every replica watches the ScheduledJobs (one informer) and applies each
// change to its scheduler within a fraction of a second, so that whichever
// replica leads runs the current set; the engine's rules for live changes
// hold (jobs.Scheduler.Set: no slot twice, a changed schedule starts from
// the change, suspend stops new slots, a deleted object stops its job). An
// object the controller refuses for what the CRD's schema cannot check (a
// kind this controller does not run, an unknown @parameter, …) does not run
// and is reported; every other job runs on.
//
// Only the leader writes status, from what its scheduler does (it observes
// the engine through jobs.Metrics) on top of what the object's status
// already says (so a new leader carries the last one's history), and from
// the definition (next slot, conditions). Writes are coalesced per object
// and rate-limited for the whole namespace: 1,000 per-second jobs do not
// turn into 1,000 writes a second. The leader records Warning Events on an
// object for a refused spec (once per generation), and for slots that failed
// for good or were missed: the first at once, then at most one per reason
// per Options.EventEvery carrying the count since the last, within the same
// rate limit, so a job failing every second never floods the namespace. The leader also runs the slots that the
// leasecron.io/trigger annotation asks for (see trigger.go).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"gorm.io/gorm"

	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

// Resource is the ScheduledJob resource.
var Resource = schema.GroupVersionResource{Group: "leasecron.io", Version: "v1alpha1", Resource: "scheduledjobs"}

// Options configure a Source.
type Options struct {
	// Client reaches the API server.
	Client dynamic.Interface
	// Namespace is the one namespace whose ScheduledJobs run.
	Namespace string
	// Catalog builds the objects' jobs; Env is what building them needs.
	Catalog *spec.Catalog
	Env     spec.Env
	// Static are jobs defined elsewhere (the flags' daily-stats); an object
	// with the same name is refused.
	Static []jobs.Definition
	// DB is the ledger's database: the tables of new jobs are migrated
	// before they run.
	DB *gorm.DB
	// Log receives the changes and problems. Default slog.Default().
	Log *slog.Logger
	// Scrub removes secrets from database errors. Default: as they are.
	Scrub func(error) error
	// StatusEvery is how often the leader looks for status to write.
	// Default 1s.
	StatusEvery time.Duration
	// StatusQPS and StatusBurst bound the status writes (and Events) of the
	// whole namespace. Default 20 and 50.
	StatusQPS   float64
	StatusBurst int
	// StatusMinInterval is how long an object's status that changed only in
	// its times (last schedule, last success, next) waits after its last
	// write. Conditions, generations and triggers are written at once.
	// Default 10s.
	StatusMinInterval time.Duration
	// EventEvery is how often at most a job gets another Event of the same
	// reason about its slots (SlotFailed, SlotsMissed): the first is
	// written at once, later ones count the slots since the one before.
	// Default 5m.
	EventEvery time.Duration
	// OnApplied, if set, is called with the number of jobs after every
	// change applied.
	OnApplied func(jobs int)
}

// Source is a running watch of a namespace's ScheduledJobs.
type Source struct {
	o       Options
	tracker *tracker
	changed chan struct{}

	mu      sync.Mutex
	sched   *jobs.Scheduler
	leading bool
	term    int // counts leaderships, so that triggers are re-queued once per leadership
	refused map[string]refusal
	applied map[string]jobs.Definition // by name, the cluster's jobs that run
	lister  cache.GenericLister
}

// refusal is why an object does not run.
type refusal struct {
	generation int64
	reason     string
	message    string
}

// New returns a Source; Run starts it.
func New(o Options) (*Source, error) {
	if o.Client == nil || o.Catalog == nil || o.Namespace == "" {
		return nil, errors.New("cluster source needs a client, a namespace and a catalog")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Scrub == nil {
		o.Scrub = func(err error) error { return err }
	}
	if o.StatusEvery <= 0 {
		o.StatusEvery = time.Second
	}
	if o.StatusQPS <= 0 {
		o.StatusQPS = 20
	}
	if o.StatusBurst <= 0 {
		o.StatusBurst = 50
	}
	if o.StatusMinInterval <= 0 {
		o.StatusMinInterval = 10 * time.Second
	}
	if o.EventEvery <= 0 {
		o.EventEvery = 5 * time.Minute
	}
	return &Source{o: o, tracker: newTracker(), changed: make(chan struct{}, 1), refused: map[string]refusal{}, applied: map[string]jobs.Definition{}}, nil
}

// Observe returns the jobs.Metrics to give the scheduler: it records what
// the status needs and passes everything on to next.
func (s *Source) Observe(next jobs.Metrics) jobs.Metrics {
	s.tracker.next = next
	return s.tracker
}

// OnLead is RunOptions.OnLead's part for the source: only the leader
// writes status and runs triggers.
func (s *Source) OnLead(leading bool) {
	s.mu.Lock()
	s.leading = leading
	if leading {
		s.term++
	}
	s.mu.Unlock()
	s.poke()
}

func (s *Source) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Check lists the namespace's ScheduledJobs once: it fails with one clear
// line when the CRD is not installed or the controller may not read them.
func Check(ctx context.Context, client dynamic.Interface, namespace string) error {
	_, err := client.Resource(Resource).Namespace(namespace).List(ctx, metav1.ListOptions{Limit: 1})
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return fmt.Errorf("the ScheduledJob CRD (scheduledjobs.leasecron.io) is not installed: install the chart (helm installs it from crds/) or kubectl apply -f charts/leasecron/crds/")
	case apierrors.IsForbidden(err):
		return fmt.Errorf("may not list scheduledjobs.leasecron.io in namespace %s: grant get, list and watch on them (the chart's Role does)", namespace)
	}
	return fmt.Errorf("list ScheduledJobs in %s: %w", namespace, err)
}

// List reads the namespace's ScheduledJobs once, by name (for the commands
// that do not watch).
func List(ctx context.Context, client dynamic.Interface, namespace string) ([]*spec.ScheduledJob, error) {
	if err := Check(ctx, client, namespace); err != nil {
		return nil, err
	}
	list, err := client.Resource(Resource).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ScheduledJobs in %s: %w", namespace, err)
	}
	out := make([]*spec.ScheduledJob, 0, len(list.Items))
	for i := range list.Items {
		sj := &spec.ScheduledJob{}
		if err := fromUnstructured(&list.Items[i], sj); err != nil {
			return nil, fmt.Errorf("ScheduledJob %s cannot be read: %w", list.Items[i].GetName(), err)
		}
		out = append(out, sj)
	}
	slices.SortFunc(out, func(a, b *spec.ScheduledJob) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Run watches the namespace's ScheduledJobs and applies them to sched
// until ctx ends; ready (if not nil) is closed once the first list has been
// applied. While this process leads, it writes status and runs triggers.
func (s *Source) Run(ctx context.Context, sched *jobs.Scheduler, ready chan<- struct{}) error {
	s.mu.Lock()
	s.sched = sched
	s.mu.Unlock()
	// An informer of its own over the dynamic client: client-go's
	// dynamicinformer imports the typed informers of every API group, 16 MB
	// of binary this controller has no use for.
	res := s.o.Client.Resource(Resource).Namespace(s.o.Namespace)
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return res.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return res.Watch(ctx, opts)
		},
	}, &unstructured.Unstructured{}, 0, cache.Indexers{})
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.poke() },
		UpdateFunc: func(any, any) { s.poke() },
		DeleteFunc: func(any) { s.poke() },
	}); err != nil {
		return fmt.Errorf("watch ScheduledJobs: %w", err)
	}
	s.mu.Lock()
	s.lister = cache.NewGenericLister(inf.GetIndexer(), Resource.GroupResource())
	s.mu.Unlock()
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	s.apply(ctx)
	if ready != nil {
		close(ready)
	}
	w := newWriter(s)
	t := time.NewTicker(s.o.StatusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.changed:
			// Coalesce a burst of events (kubectl apply -f of many objects).
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			s.apply(ctx)
		case <-t.C:
		}
		w.round(ctx)
	}
}

// objects returns the namespace's ScheduledJobs, by name.
func (s *Source) objects() []*spec.ScheduledJob {
	s.mu.Lock()
	lister := s.lister
	s.mu.Unlock()
	list, err := lister.List(labels.Everything())
	if err != nil {
		return nil
	}
	out := make([]*spec.ScheduledJob, 0, len(list))
	for _, o := range list {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		sj := &spec.ScheduledJob{}
		if err := fromUnstructured(u, sj); err != nil {
			s.o.Log.Error("ScheduledJob cannot be read", "scheduled_job", u.GetName(), "err", err)
			continue
		}
		out = append(out, sj)
	}
	slices.SortFunc(out, func(a, b *spec.ScheduledJob) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// apply builds every object's job and gives the set to the scheduler.
func (s *Source) apply(ctx context.Context) {
	objs := s.objects()
	static := map[string]bool{}
	for _, d := range s.o.Static {
		static[d.Name] = true
	}
	defs := slices.Clone(s.o.Static)
	refused := map[string]refusal{}
	applied := map[string]jobs.Definition{}
	for _, sj := range objs {
		if sj.DeletionTimestamp != nil {
			continue // being deleted (a finalizer holds it): like CronJob, it starts nothing more
		}
		if static[sj.Name] {
			refused[sj.Name] = refusal{sj.Generation, "NameInUse", fmt.Sprintf("job %s is defined by the controller's flags (--schedule): rename this ScheduledJob or remove the flag", sj.Name)}
			continue
		}
		def, err := s.o.Catalog.Definition(sj, s.o.Env)
		if err != nil {
			refused[sj.Name] = refusal{sj.Generation, "Refused", oneLine(err)}
			continue
		}
		defs = append(defs, def)
		applied[sj.Name] = def
	}
	s.mu.Lock()
	sched := s.sched
	s.mu.Unlock()
	before := sched.Definitions()
	added, changed, removed := jobs.Diff(before, defs)
	if len(added)+len(changed) > 0 {
		if err := jobs.Migrate(ctx, s.o.DB, defs); err != nil {
			s.o.Log.Error("ScheduledJobs not applied: their tables cannot be migrated; the jobs that ran before keep running", "err", s.o.Scrub(err))
			return
		}
	}
	if err := sched.Set(defs); err != nil {
		s.o.Log.Error("ScheduledJobs not applied; the jobs that ran before keep running", "err", err)
		return
	}
	s.mu.Lock()
	s.refused, s.applied = refused, applied
	s.mu.Unlock()
	if len(added)+len(changed)+len(removed) > 0 {
		s.o.Log.Info("scheduled jobs applied", "jobs", len(defs), "added", strings.Join(added, ","),
			"changed", strings.Join(changed, ","), "removed", strings.Join(removed, ","), "refused", len(refused))
		for _, name := range removed {
			s.tracker.forget(name)
		}
		if s.o.OnApplied != nil {
			s.o.OnApplied(len(defs))
		}
	}
}

// fromUnstructured converts an object the dynamic client returned.
func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

// oneLine joins a multi-problem error into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
