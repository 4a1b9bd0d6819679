package bench

// The side-by-side election suite: client-go's own LeaderElector
// (tools/leaderelection with a LeaseLock and ReleaseOnCancel) and leasecron's
// Lease elector, in process, on one real kube-apiserver, each behind the
// same fault-injecting RoundTripper (rest.Config.WrapTransport), so both meet
// exactly the same faults. For each fault a leader and a follower of one
// kind share a Lease; the suite measures the longest time two of them both
// believed they led, the time until the follower took over, and the
// follower's API requests per minute.
//
// This file has no build tag: TestElectionSideBySide runs the matrix with
// short timings in `make test` and asserts the safety property (leasecron
// never has two leaders for longer than client-go) and that leasecron takes
// over wherever client-go does. `make bench` (lease_test.go) runs the same
// matrix with client-go's default timings and writes the table into
// BENCHMARKS.md.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"

	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/pkg/leader"
)

// electionNamespace holds the suite's Leases, one per case and kind.
const electionNamespace = "default"

// electionTimings are the electors' timings and the suite's windows.
type electionTimings struct {
	lease, renew, retry time.Duration
	// window is how long the faults act on a leader that stays alive
	// before the case's trigger (and how long an outage lasts).
	window time.Duration
}

// slowGet is the latency of a slow GET: below the renew deadline, so that
// a read bounded by it (leasecron's) still completes.
func (tm electionTimings) slowGet() time.Duration { return 7 * tm.renew / 10 }

// takeoverWait bounds the wait for a takeover after the trigger.
func (tm electionTimings) takeoverWait() time.Duration { return 3*tm.lease + 10*time.Second }

// faultCase is one row of the matrix. A leader A and a follower B of one
// kind run on one Lease with the case's faults; after the window the
// trigger fires (by default A shuts down and releases the Lease) and the
// suite waits for B to lead.
type faultCase struct {
	name, what string
	// leader and follower set each process's faults before it starts.
	leader, follower func(*faults, electionTimings)
	// trigger ends the window; nil: A shuts down gracefully.
	trigger func(ctx context.Context, r *electionRun) error
	// during runs at the start of the window (an outage begins).
	during func(r *electionRun)
}

func electionCases() []faultCase {
	noWatchSlowGet := func(f *faults, tm electionTimings) { f.slowGet = tm.slowGet(); f.noWatch = true }
	silent := func(f *faults, _ electionTimings) { f.silentWatch = true }
	closing := func(f *faults, _ electionTimings) { f.closeWatch = true }
	return []faultCase{
		{name: "slow GET", what: "every GET of the Lease takes 0.7 × the renew deadline; list and watch refused (so both poll); then the leader releases",
			leader: noWatchSlowGet, follower: noWatchSlowGet},
		{name: "silent watch", what: "watches stay open but pass nothing on; then the leader releases",
			leader: silent, follower: silent},
		{name: "watch closes at once", what: "every watch is closed by the proxy as soon as it opens; then the leader releases",
			leader: closing, follower: closing},
		{name: "409 on release", what: "another writer changes the Lease (an annotation) just before the leader's release arrives",
			leader: func(f *faults, _ electionTimings) { f.conflictRelease = true }},
		{name: "API server outage", what: "every request of both fails for the window (open watches are cut); takeover counted from the end of the outage",
			during: func(r *electionRun) { r.a.faults.setDown(true); r.b.faults.setDown(true) },
			trigger: func(_ context.Context, r *electionRun) error {
				r.a.faults.setDown(false)
				r.b.faults.setDown(false)
				return nil
			}},
		{name: "another writer takes the Lease", what: "an admin client writes another holder (who never renews) into the Lease; takeover counted from that write",
			trigger: func(ctx context.Context, r *electionRun) error { return r.takeLease(ctx, "intruder") }},
	}
}

// electorKinds are the two electors compared.
var electorKinds = []string{"leasecron", "client-go"}

// electionResult is one kind's measurement of one case.
type electionResult struct {
	overlap   time.Duration // longest time A and B both led
	takeover  time.Duration // trigger → B leads
	tookOver  bool
	perMinute float64 // B's API requests per minute over the window
	err       error
}

// runElectionMatrix runs every case for both kinds, all at once (each on a
// Lease of its own), and returns the results by case and kind.
func runElectionMatrix(t *testing.T, cp *kube.ControlPlane, tm electionTimings) (map[string]map[string]*electionResult, []faultCase) {
	t.Helper()
	admin, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	cases := electionCases()
	results := map[string]map[string]*electionResult{}
	var wg sync.WaitGroup
	for i, c := range cases {
		results[c.name] = map[string]*electionResult{}
		for _, kind := range electorKinds {
			res := &electionResult{}
			results[c.name][kind] = res
			r := &electionRun{cp: cp, admin: admin, tm: tm, kind: kind, c: c,
				lease: fmt.Sprintf("side-%d-%s", i, strings.ReplaceAll(kind, "-", ""))}
			wg.Add(1)
			go func() {
				defer wg.Done()
				*res = r.run()
			}()
		}
	}
	wg.Wait()
	for _, c := range cases {
		for _, kind := range electorKinds {
			if err := results[c.name][kind].err; err != nil {
				t.Errorf("%s, %s: %v", c.name, kind, err)
			}
		}
	}
	return results, cases
}

// electionTable formats the matrix: one row per case and kind.
func electionTable(results map[string]map[string]*electionResult, cases []faultCase) (header []string, rows [][]string) {
	header = []string{"fault", "elector", "longest overlap of two leaders", "takeover", "follower's API requests / min"}
	for _, c := range cases {
		for _, kind := range electorKinds {
			r := results[c.name][kind]
			takeover := "never"
			if r.tookOver {
				takeover = round(r.takeover)
			}
			rows = append(rows, []string{c.name, kind, round(r.overlap), takeover, fmt.Sprintf("%.0f", r.perMinute)})
		}
	}
	return header, rows
}

// electionRun is one kind's run of one case.
type electionRun struct {
	cp    *kube.ControlPlane
	admin kubernetes.Interface
	tm    electionTimings
	kind  string
	c     faultCase
	lease string
	a, b  *contestant
}

func (r *electionRun) run() (res electionResult) {
	ctx := context.Background()
	r.a = r.start("a", r.c.leader)
	defer r.a.stop()
	if !r.a.awaitLeading(r.tm.takeoverWait()) {
		return electionResult{err: errors.New("the first contestant never led")}
	}
	r.b = r.start("b", r.c.follower)
	defer r.b.stop()
	// The follower has read the Lease once before the window opens.
	if !r.b.awaitAnswered(r.tm.takeoverWait()) {
		return electionResult{err: errors.New("the follower's requests were never answered")}
	}
	from := time.Now()
	reqs0 := r.b.faults.requests.Load()
	if r.c.during != nil {
		r.c.during(r)
	}
	// The measurement window: the faults act on a live leader.
	window := time.NewTimer(r.tm.window)
	select {
	case <-window.C:
	case <-r.b.leading:
		window.Stop() // took over early: the overlap tells whether wrongly
	}
	reqs := r.b.faults.requests.Load() - reqs0
	res.perMinute = float64(reqs) / time.Since(from).Minutes()
	trigger := r.c.trigger
	if trigger == nil {
		trigger = func(context.Context, *electionRun) error { r.a.stop(); return nil }
	}
	fired := time.Now()
	if err := trigger(ctx, r); err != nil {
		return electionResult{err: fmt.Errorf("trigger: %w", err)}
	}
	if r.b.awaitLeading(r.tm.takeoverWait()) {
		res.tookOver = true
		res.takeover = max(0, r.b.firstLed().Sub(fired))
	}
	r.a.stop()
	r.b.stop()
	res.overlap = overlap(r.a.intervals(), r.b.intervals())
	return res
}

// takeLease writes holder into the Lease as another writer would, with a
// fresh renewal and the electors' lease duration.
func (r *electionRun) takeLease(ctx context.Context, holder string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := r.admin.CoordinationV1().Leases(electionNamespace).Get(ctx, r.lease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now, secs := metav1.NewMicroTime(time.Now()), int32(r.tm.lease/time.Second)
		l.Spec.HolderIdentity, l.Spec.RenewTime, l.Spec.AcquireTime, l.Spec.LeaseDurationSeconds = &holder, &now, &now, &secs
		_, err = r.admin.CoordinationV1().Leases(electionNamespace).Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
}

// touchLease changes the Lease without changing its spec (an annotation),
// as a label or annotation controller might: the holder's copy is stale.
func (r *electionRun) touchLease(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := r.admin.CoordinationV1().Leases(electionNamespace).Get(ctx, r.lease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations["bench.leasecron.io/touched"] = time.Now().Format(time.RFC3339Nano)
		_, err = r.admin.CoordinationV1().Leases(electionNamespace).Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
}

// start runs one contestant of r's kind as identity id, behind its own
// fault-injecting transport.
func (r *electionRun) start(id string, setFaults func(*faults, electionTimings)) *contestant {
	f := &faults{onRelease: func(ctx context.Context) error { return r.touchLease(ctx) }}
	if setFaults != nil {
		setFaults(f, r.tm)
	}
	cfg := r.cp.AdminConfig()
	cfg.ContentType = "application/json" // so the fault transport can read a PUT's holder
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &faultTransport{next: rt, f: f} }
	c := newContestant(f)
	identity := r.lease + "-" + id
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	switch r.kind {
	case "leasecron":
		client, err := leader.NewKubeClient(cfg, electionNamespace, "leasecron-bench")
		if err != nil {
			c.fail(err)
			return c
		}
		l, err := leader.NewLease(leader.LeaseConfig{
			Client: client, Namespace: electionNamespace, Name: r.lease, Identity: identity,
			LeaseDuration: r.tm.lease, RenewDeadline: r.tm.renew, RetryPeriod: r.tm.retry,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			c.fail(err)
			return c
		}
		go func() {
			defer close(c.exited)
			_ = l.Run(ctx, func(leaderCtx context.Context) error {
				c.began()
				select {
				case <-leaderCtx.Done():
				case <-ctx.Done():
				}
				c.ended()
				return nil
			})
		}()
	default:
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			c.fail(err)
			return c
		}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Name: r.lease, Namespace: electionNamespace},
				Client:     client.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
			},
			LeaseDuration: r.tm.lease, RenewDeadline: r.tm.renew, RetryPeriod: r.tm.retry,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(leaderCtx context.Context) {
					c.began()
					<-leaderCtx.Done()
					c.ended()
				},
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			c.fail(err)
			return c
		}
		go func() {
			defer close(c.exited)
			le.Run(ctx)
		}()
	}
	return c
}

// overlap is the longest time an interval of a and one of b overlap.
func overlap(a, b [][2]time.Time) time.Duration {
	var longest time.Duration
	for _, x := range a {
		for _, y := range b {
			end, start := x[1], x[0]
			if y[1].Before(end) {
				end = y[1]
			}
			if y[0].After(start) {
				start = y[0]
			}
			longest = max(longest, end.Sub(start))
		}
	}
	return longest
}

// contestant is one running elector and the times it led.
type contestant struct {
	faults  *faults
	cancel  context.CancelFunc
	leading chan struct{} // closed when it first leads
	exited  chan struct{} // closed when its Run returned
	once    sync.Once

	mu       sync.Mutex
	led      [][2]time.Time // [began, ended]; ended zero while it leads
	err      error
	stopOnce sync.Once
}

func newContestant(f *faults) *contestant {
	return &contestant{faults: f, leading: make(chan struct{}), exited: make(chan struct{})}
}

func (c *contestant) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	close(c.exited)
}

func (c *contestant) began() {
	c.mu.Lock()
	c.led = append(c.led, [2]time.Time{time.Now()})
	c.mu.Unlock()
	c.once.Do(func() { close(c.leading) })
}

func (c *contestant) ended() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.led); n > 0 && c.led[n-1][1].IsZero() {
		c.led[n-1][1] = now
	}
}

func (c *contestant) firstLed() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.led[0][0]
}

// intervals returns when c led; one that has not ended ends now.
func (c *contestant) intervals() [][2]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][2]time.Time, len(c.led))
	for i, l := range c.led {
		if l[1].IsZero() {
			l[1] = time.Now()
		}
		out[i] = l
	}
	return out
}

func (c *contestant) awaitLeading(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.leading:
		return true
	case <-c.exited:
		return false
	case <-t.C:
		return false
	}
}

// awaitAnswered waits until the API server answered one of c's requests
// on the Lease.
func (c *contestant) awaitAnswered(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for c.faults.answered.Load() == 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
	return true
}

// stop shuts c down (a leader releases the Lease) and waits for it.
func (c *contestant) stop() {
	c.stopOnce.Do(func() {
		c.faults.setDown(false)
		if c.cancel != nil {
			c.cancel()
		}
		<-c.exited
	})
}

// faults are the faults one process's transport injects. The fields set
// before the process starts are read only; down changes during a run.
type faults struct {
	slowGet         time.Duration // delay of each GET of the Lease
	noWatch         bool          // refuse list and watch
	silentWatch     bool          // watches stay open and pass nothing on
	closeWatch      bool          // watches end as soon as they open
	conflictRelease bool          // once: onRelease runs just before the first release is sent
	onRelease       func(context.Context) error

	requests atomic.Int64 // requests sent (a watch counts once)
	answered atomic.Int64 // requests on the Lease the API server answered 2xx
	released atomic.Bool  // conflictRelease has fired

	mu      sync.Mutex
	down    bool
	streams map[io.Closer]bool // open watch bodies, cut by an outage
}

func (f *faults) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	var cut map[io.Closer]bool
	if down {
		cut, f.streams = f.streams, nil
	}
	f.mu.Unlock()
	for s := range cut { // outside f.mu: Close untracks
		s.Close()
	}
}

func (f *faults) isDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down
}

func (f *faults) track(s io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return false
	}
	if f.streams == nil {
		f.streams = map[io.Closer]bool{}
	}
	f.streams[s] = true
	return true
}

func (f *faults) untrack(s io.Closer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.streams, s)
}

var errInjected = errors.New("injected fault: the API server is unreachable")

// faultTransport injects f's faults into the requests on Leases.
type faultTransport struct {
	next http.RoundTripper
	f    *faults
}

func (t *faultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.f.requests.Add(1)
	if t.f.isDown() {
		return nil, errInjected
	}
	lease := strings.Contains(req.URL.Path, "/leases")
	q := req.URL.Query()
	watching := q.Get("watch") == "true" || q.Get("watch") == "1"
	collection := strings.HasSuffix(req.URL.Path, "/leases")
	if !lease {
		return t.next.RoundTrip(req)
	}
	switch {
	case req.Method == http.MethodGet && (watching || collection) && t.f.noWatch:
		return nil, errors.New("injected fault: list and watch refused")
	case req.Method == http.MethodGet && !watching && !collection && t.f.slowGet > 0:
		d := time.NewTimer(t.f.slowGet)
		select {
		case <-d.C:
		case <-req.Context().Done():
			d.Stop()
			return nil, req.Context().Err()
		}
	case req.Method == http.MethodPut && t.f.conflictRelease && !t.f.released.Load() && releases(req):
		t.f.released.Store(true)
		if err := t.f.onRelease(req.Context()); err != nil {
			return nil, fmt.Errorf("injecting a conflicting write: %w", err)
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil && resp.StatusCode/100 == 2 {
		t.f.answered.Add(1)
	}
	if err != nil || !watching || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	switch {
	case t.f.closeWatch:
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(nil))
	case t.f.silentWatch:
		resp.Body = &silentBody{real: resp.Body, closed: make(chan struct{}), ctx: req.Context()}
	}
	s := &cutBody{ReadCloser: resp.Body, f: t.f}
	if !t.f.track(s) {
		resp.Body.Close()
		return nil, errInjected
	}
	resp.Body = s
	return resp, nil
}

// releases reports whether req writes a Lease with no holder (a release),
// leaving req's body readable.
func releases(req *http.Request) bool {
	if req.Body == nil {
		return false
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return false
	}
	var l coordinationv1.Lease
	if json.Unmarshal(b, &l) != nil {
		return false
	}
	return l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == ""
}

// silentBody holds a watch open and passes nothing on until it is closed or
// the request ends.
type silentBody struct {
	real   io.ReadCloser
	ctx    context.Context
	once   sync.Once
	closed chan struct{}
}

func (s *silentBody) Read([]byte) (int, error) {
	select {
	case <-s.closed:
		return 0, io.EOF
	case <-s.ctx.Done():
		return 0, s.ctx.Err()
	}
}

func (s *silentBody) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.real.Close()
}

// cutBody is a watch's body that an outage closes.
type cutBody struct {
	io.ReadCloser
	f *faults
}

func (c *cutBody) Close() error {
	c.f.untrack(c)
	return c.ReadCloser.Close()
}

// TestElectionSideBySide runs the fault matrix with short timings and
// asserts, for every fault, that leasecron never had two leaders for longer
// than client-go's elector had, and that its follower took over wherever
// client-go's did.
func TestElectionSideBySide(t *testing.T) {
	cp := kube.Start(t, kube.Options{})
	tm := electionTimings{lease: 2 * time.Second, renew: time.Second, retry: 400 * time.Millisecond, window: 4 * time.Second}
	results, cases := runElectionMatrix(t, cp, tm)
	header, rows := electionTable(results, cases)
	t.Logf("lease %s, renew deadline %s, retry period %s, window %s:\n%s", tm.lease, tm.renew, tm.retry, tm.window, markdownTable(header, rows))
	checkElection(t, results, cases)
}

// checkElection asserts what both the fast and the bench run hold to: for
// every fault, leasecron never had two leaders for longer than client-go's
// elector, and its follower took over wherever client-go's did; and a watch
// that closes at once does not turn into a flood of requests (over ten
// times client-go's poll; a loop of watches is thousands of times it).
func checkElection(t *testing.T, results map[string]map[string]*electionResult, cases []faultCase) {
	t.Helper()
	for _, c := range cases {
		lc, cg := results[c.name]["leasecron"], results[c.name]["client-go"]
		if lc.overlap > cg.overlap {
			t.Errorf("%s: leasecron had two leaders for %s, client-go for %s", c.name, lc.overlap, cg.overlap)
		}
		if cg.tookOver && !lc.tookOver {
			t.Errorf("%s: client-go's follower took over (after %s), leasecron's never did", c.name, cg.takeover)
		}
	}
	if lc, cg := results["watch closes at once"]["leasecron"], results["watch closes at once"]["client-go"]; lc.perMinute > 10*cg.perMinute {
		t.Errorf("watch closes at once: leasecron's follower sent %.0f requests/min, client-go's %.0f", lc.perMinute, cg.perMinute)
	}
}

// markdownTable formats a table for BENCHMARKS.md.
func markdownTable(header []string, rows [][]string) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat("---|", len(header)) + "\n")
	for _, row := range rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	return b.String()
}

func round(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}
