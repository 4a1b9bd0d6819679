package leader

// Integration tests of the Lease elector against a real kube-apiserver and
// etcd (internal/testenv/kube; build the binaries with hack/tools/build.sh).
// One control plane serves every subtest of TestLeaseIntegration; the
// subtests run in parallel, each in a namespace of its own.

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

// Short timings keep the suite fast: lease 3s, renew deadline 2s, retry 500ms.
const (
	itLease = 3 * time.Second
	itRenew = 2 * time.Second
	itRetry = 500 * time.Millisecond
	// itWait bounds every wait for an event: generous, the machine is busy.
	itWait = 60 * time.Second
)

type itEnv struct {
	cp    *kube.ControlPlane
	admin kubernetes.Interface
}

func TestLeaseIntegration(t *testing.T) {
	cp := kube.Start(t, kube.Options{})
	env := &itEnv{cp: cp, admin: kubernetes.NewForConfigOrDie(cp.AdminConfig())}
	t.Run("group", func(t *testing.T) {
		t.Run("Acquire", env.testAcquire)
		t.Run("Renew", env.testRenew)
		t.Run("GracefulRelease", env.testGracefulRelease)
		t.Run("ReleaseWakesFollowerBeforeItsPoll", env.testReleaseWakesSlowFollower)
		t.Run("TakeoverAfterHolderCrash", env.testCrashTakeover)
		t.Run("TakenByAnother", env.testTakenByAnother)
		t.Run("InteropWithClientGo", env.testInteropWithClientGo)
		t.Run("RBACDenied", env.testRBACDenied)
		t.Run("RBACChartRole", func(t *testing.T) { env.testRBACRole(t, true) })
		t.Run("RBACRoleWithoutWatch", func(t *testing.T) { env.testRBACRole(t, false) })
	})
}

// namespace creates a namespace for one subtest.
func (e *itEnv) namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	name = strings.TrimPrefix(name, "testleaseintegration-group-")
	if len(name) > 50 {
		name = name[:50]
	}
	if _, err := e.admin.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

func (e *itEnv) lease(t *testing.T, ns string) *coordinationv1.Lease {
	t.Helper()
	l, err := e.admin.CoordinationV1().Leases(ns).Get(context.Background(), "leasecron", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting the Lease: %v", err)
	}
	return l
}

// elector builds a Lease elector with its own client from cfg.
func (e *itEnv) elector(t *testing.T, cfg *rest.Config, ns, id string, log *slog.Logger, tune func(*LeaseConfig)) *Lease {
	t.Helper()
	client, err := NewKubeClient(cfg, ns, "leasecron-test")
	if err != nil {
		t.Fatal(err)
	}
	lc := LeaseConfig{
		Client: client, Events: client, Namespace: ns, Name: "leasecron", Identity: id,
		LeaseDuration: itLease, RenewDeadline: itRenew, RetryPeriod: itRetry, Log: log,
	}
	if tune != nil {
		tune(&lc)
	}
	l, err := NewLease(lc)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// candidate is one running Lease elector.
type candidate struct {
	leading   chan struct{}        // closed when lead starts
	leaderCtx chan context.Context // lead's context, once it starts
	release   chan struct{}        // close to make lead return
	shutdown  context.CancelFunc   // ends Run's context
	exited    chan struct{}        // closed when Run returned
	err       error                // Run's result, once exited
	stop      func()

	mu          sync.Mutex
	startedAt   time.Time // lead started
	returnedAt  time.Time // lead returned
	leaderCtxAt time.Time // lead's context was cancelled (leadership lost)
}

func run(t *testing.T, l *Lease) *candidate {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{
		leading: make(chan struct{}), leaderCtx: make(chan context.Context, 1),
		release: make(chan struct{}), shutdown: cancel, exited: make(chan struct{}),
	}
	var releaseOnce sync.Once
	go func() {
		defer close(c.exited)
		c.err = l.Run(ctx, func(leaderCtx context.Context) error {
			c.mu.Lock()
			c.startedAt = time.Now()
			c.mu.Unlock()
			c.leaderCtx <- leaderCtx
			close(c.leading)
			select {
			case <-c.release:
			case <-leaderCtx.Done():
				c.mu.Lock()
				c.leaderCtxAt = time.Now()
				c.mu.Unlock()
			}
			c.mu.Lock()
			c.returnedAt = time.Now()
			c.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		releaseOnce.Do(func() { close(c.release) })
		select {
		case <-c.exited:
		case <-time.After(itWait):
			t.Errorf("Run did not return %s after shutdown", itWait)
		}
	})
	c.stop = func() {
		cancel()
		releaseOnce.Do(func() { close(c.release) })
	}
	return c
}

// stop shuts the candidate down: its lead returns, then Run releases.
func (c *candidate) Stop() { c.stop() }

func (c *candidate) times() (started, returned, ctxDone time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startedAt, c.returnedAt, c.leaderCtxAt
}

func await(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(itWait):
		t.Fatalf("timed out after %s waiting for %s", itWait, what)
	}
}

// eventually polls cond (an observation of the API server) until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(itWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", itWait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leading(c *candidate) bool {
	select {
	case <-c.leading:
		return true
	default:
		return false
	}
}

func (e *itEnv) testAcquire(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	a := run(t, e.elector(t, e.cp.AdminConfig(), ns, "a", slog.New(&logSink{}), nil))
	await(t, "a to lead", a.leading)
	l := e.lease(t, ns)
	if h := holder(l); h != "a" {
		t.Fatalf("holder = %q, want a", h)
	}
	if d := l.Spec.LeaseDurationSeconds; d == nil || *d != int32(itLease/time.Second) {
		t.Fatalf("leaseDurationSeconds = %v, want %d", d, itLease/time.Second)
	}
	if l.Spec.AcquireTime == nil || l.Spec.RenewTime == nil {
		t.Fatalf("acquireTime/renewTime unset: %+v", l.Spec)
	}
	a.Stop()
	await(t, "a's Run to return", a.exited)
	if a.err != nil {
		t.Fatalf("Run = %v, want nil after a clean shutdown", a.err)
	}
	if h := holder(e.lease(t, ns)); h != "" {
		t.Fatalf("holder after shutdown = %q, want the lease released", h)
	}
}

func (e *itEnv) testRenew(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	el := e.elector(t, e.cp.AdminConfig(), ns, "a", slog.New(&logSink{}), nil)
	a := run(t, el)
	await(t, "a to lead", a.leading)
	first := e.lease(t, ns)
	renewals := map[time.Time]bool{first.Spec.RenewTime.Time: true}
	last := first.Spec.RenewTime.Time
	// Several retry periods, measured by the renewals themselves.
	eventually(t, "4 renewals", func() bool {
		l := e.lease(t, ns)
		if h := holder(l); h != "a" {
			t.Fatalf("holder = %q while a led, want a", h)
		}
		if rt := l.Spec.RenewTime.Time; !rt.Equal(last) {
			if rt.Before(last) {
				t.Fatalf("renewTime went back from %s to %s", last, rt)
			}
			renewals[rt], last = true, rt
		}
		return len(renewals) >= 5
	})
	l := e.lease(t, ns)
	if !l.Spec.AcquireTime.Equal(first.Spec.AcquireTime) {
		t.Errorf("acquireTime changed on renewal: %s → %s", first.Spec.AcquireTime, l.Spec.AcquireTime)
	}
	if *l.Spec.LeaseTransitions != *first.Spec.LeaseTransitions {
		t.Errorf("leaseTransitions changed on renewal: %d → %d", *first.Spec.LeaseTransitions, *l.Spec.LeaseTransitions)
	}
	if span := last.Sub(first.Spec.RenewTime.Time); span < 2*itRetry {
		t.Errorf("renewals span only %s, want several retry periods", span)
	}
	if err := el.Healthy(); err != nil {
		t.Errorf("Healthy() = %v while renewing", err)
	}
	select {
	case <-a.exited:
		t.Fatalf("Run returned while renewing: %v", a.err)
	default:
	}
}

func (e *itEnv) testGracefulRelease(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	a := run(t, e.elector(t, e.cp.AdminConfig(), ns, "a", slog.New(&logSink{}), nil))
	await(t, "a to lead", a.leading)
	bLog := &logSink{}
	b := run(t, e.elector(t, e.cp.AdminConfig(), ns, "b", slog.New(bLog), nil))
	eventually(t, "b's watch", func() bool { return bLog.count(slog.LevelDebug, watchingMsg) > 0 })
	if leading(b) {
		t.Fatal("b led while a held the lease")
	}
	transitions := *e.lease(t, ns).Spec.LeaseTransitions

	a.Stop()
	await(t, "a's Run to return", a.exited)
	if a.err != nil {
		t.Fatalf("a's Run = %v, want nil", a.err)
	}
	await(t, "b to take over", b.leading)
	_, aReturned, _ := a.times()
	bStarted, _, _ := b.times()
	t.Logf("graceful handover: a's lead returned → b's lead started in %s (retry period %s)",
		bStarted.Sub(aReturned).Round(time.Millisecond), itRetry)
	l := e.lease(t, ns)
	if h := holder(l); h != "b" {
		t.Fatalf("holder = %q, want b", h)
	}
	if got := *l.Spec.LeaseTransitions; got != transitions+1 {
		t.Fatalf("leaseTransitions = %d, want %d", got, transitions+1)
	}
	if n := bLog.count(slog.LevelWarn); n != 0 {
		t.Fatalf("b logged %d warnings, want none", n)
	}
}

// A follower whose own poll is a minute away still takes over a released
// lease: the watch woke it.
func (e *itEnv) testReleaseWakesSlowFollower(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	a := run(t, e.elector(t, e.cp.AdminConfig(), ns, "a", slog.New(&logSink{}), nil))
	await(t, "a to lead", a.leading)
	bLog := &logSink{}
	b := run(t, e.elector(t, e.cp.AdminConfig(), ns, "b", slog.New(bLog), func(c *LeaseConfig) {
		c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 10*time.Minute, 5*time.Minute, 2*time.Minute
	}))
	eventually(t, "b's watch", func() bool { return bLog.count(slog.LevelDebug, watchingMsg) > 0 })
	a.Stop()
	await(t, "a's Run to return", a.exited)
	_, aReturned, _ := a.times()
	select {
	case <-b.leading:
	case <-time.After(time.Minute):
		t.Fatal("b did not take over the released lease within a minute; its poll is two minutes away")
	}
	bStarted, _, _ := b.times()
	t.Logf("handover to a follower with a 2m retry period: %s", bStarted.Sub(aReturned).Round(time.Millisecond))
	if h := holder(e.lease(t, ns)); h != "b" {
		t.Fatalf("holder = %q, want b", h)
	}
}

// cutTransport fails every request once cut: a holder that is cut off stops
// renewing without releasing, as if it had crashed.
type cutTransport struct {
	rt  http.RoundTripper
	cut *atomic.Bool
}

func (c cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("test: holder cut off from the API server")
	}
	return c.rt.RoundTrip(r)
}

func (e *itEnv) testCrashTakeover(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	var cut atomic.Bool
	cfg := e.cp.AdminConfig()
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return cutTransport{rt, &cut} }
	a := run(t, e.elector(t, cfg, ns, "a", slog.New(&logSink{}), nil))
	await(t, "a to lead", a.leading)
	// b's own poll is two minutes away: only the watch (renewals observed
	// as they happen) and the expiry timer it sets can make b take over
	// within the holder's lease duration.
	bLog := &logSink{}
	b := run(t, e.elector(t, e.cp.AdminConfig(), ns, "b", slog.New(bLog), func(c *LeaseConfig) {
		c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 10*time.Minute, 5*time.Minute, 2*time.Minute
	}))
	eventually(t, "b's watch", func() bool { return bLog.count(slog.LevelDebug, watchingMsg) > 0 })
	if leading(b) {
		t.Fatal("b led while a held the lease")
	}
	lastRenew := e.lease(t, ns).Spec.RenewTime.Time
	cut.Store(true)
	crashed := time.Now()

	select {
	case <-b.leading:
	case <-time.After(time.Minute):
		t.Fatal("b did not take over the expired lease within a minute; its poll is two minutes away")
	}
	bStarted, _, _ := b.times()
	await(t, "a's Run to return", a.exited)
	if !errors.Is(a.err, ErrLeadershipLost) {
		t.Fatalf("a's Run = %v, want ErrLeadershipLost", a.err)
	}
	_, aReturned, aLost := a.times()
	if aLost.IsZero() || aReturned.IsZero() {
		t.Fatal("a's lead context was not cancelled on leadership loss")
	}
	l := e.lease(t, ns)
	if h := holder(l); h != "b" {
		t.Fatalf("holder = %q, want b", h)
	}
	t.Logf("crash takeover: holder cut off → follower leads in %s (lease duration %s; %s after the last renewal the holder made before the cut); the cut-off holder saw its loss %s after the cut, %s before the follower started",
		bStarted.Sub(crashed).Round(time.Millisecond), itLease, bStarted.Sub(lastRenew).Round(time.Millisecond),
		aLost.Sub(crashed).Round(time.Millisecond), bStarted.Sub(aLost).Round(time.Millisecond))
}

// serviceAccountConfig returns a client config authenticating as a fresh
// ServiceAccount ns/name (a TokenRequest token), with no RBAC of its own.
func (e *itEnv) serviceAccountConfig(t *testing.T, ns, name string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	if _, err := e.admin.CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secs := int64(3600)
	tr, err := e.admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	return &rest.Config{
		Host: e.cp.Host(), BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.cp.CAData()},
	}
}

// A process without any rights on leases says which permission is missing
// and gives up after ForbiddenTimeout instead of waiting forever.
func (e *itEnv) testRBACDenied(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	cfg := e.serviceAccountConfig(t, ns, "nobody")
	log := &logSink{}
	l := e.elector(t, cfg, ns, "nobody", slog.New(log), func(c *LeaseConfig) { c.ForbiddenTimeout = 2 * time.Second })
	c := run(t, l)
	await(t, "Run to give up", c.exited)
	if leading(c) {
		t.Fatal("led without any rights on leases")
	}
	err := c.err
	t.Logf("Run = %v", err)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("Run = %v, want a 403 Forbidden error", err)
	}
	for _, want := range []string{"forbids get", `cannot get resource "leases"`, "coordination.k8s.io", "system:serviceaccount:" + ns + ":nobody"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run's error does not mention %q: %v", want, err)
		}
	}
	if n := log.count(slog.LevelError, "RBAC forbids get", "leases.coordination.k8s.io", ns, "grant get and update"); n != 1 {
		t.Errorf("%d error logs naming the forbidden get on the lease, want exactly 1", n)
	}
	if n := log.count(slog.LevelWarn, "list/watch", "leases.coordination.k8s.io", "grant list and watch"); n != 1 {
		t.Errorf("%d warnings naming the forbidden list/watch, want exactly 1", n)
	}
}

// testRBACRole runs two ServiceAccount-authenticated candidates under a Role
// like the Helm chart's: get/update (and, withWatch, list/watch) on the named
// Lease, create on leases. With list/watch the follower watches (no warning);
// without, it warns once and polls. Either way it takes over on release.
func (e *itEnv) testRBACRole(t *testing.T, withWatch bool) {
	t.Parallel()
	ctx := context.Background()
	ns := e.namespace(t)
	named := []string{"get", "update"}
	if withWatch {
		named = append(named, "list", "watch")
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "leasecron"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"leasecron"}, Verbs: named},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		},
	}
	if _, err := e.admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := e.serviceAccountConfig(t, ns, "leasecron")
	if _, err := e.admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "leasecron"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "leasecron"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "leasecron", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The authorizer learns of new bindings through its own watch: wait
	// until the grant is in force.
	sa := kubernetes.NewForConfigOrDie(cfg)
	eventually(t, "the RoleBinding to take effect", func() bool {
		_, err := sa.CoordinationV1().Leases(ns).Get(ctx, "leasecron", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})

	aLog, bLog := &logSink{}, &logSink{}
	a := run(t, e.elector(t, cfg, ns, "a", slog.New(aLog), nil))
	await(t, "a to create the lease and lead", a.leading)
	b := run(t, e.elector(t, cfg, ns, "b", slog.New(bLog), nil))
	if withWatch {
		eventually(t, "b's watch", func() bool { return bLog.count(slog.LevelDebug, watchingMsg) > 0 })
	} else {
		eventually(t, "b's warning about the missing list/watch", func() bool {
			return bLog.count(slog.LevelWarn, "list/watch", "grant list and watch") > 0
		})
	}
	a.Stop()
	await(t, "a's Run to return", a.exited)
	if a.err != nil {
		t.Fatalf("a's Run = %v, want nil", a.err)
	}
	await(t, "b to take over", b.leading)
	_, aReturned, _ := a.times()
	bStarted, _, _ := b.times()
	t.Logf("handover under the Role (list/watch granted: %v): %s", withWatch, bStarted.Sub(aReturned).Round(time.Millisecond))
	if h := holder(e.lease(t, ns)); h != "b" {
		t.Fatalf("holder = %q, want b", h)
	}
	wantWarn := 0
	if !withWatch {
		wantWarn = 1
	}
	if n := bLog.count(slog.LevelWarn); n != wantWarn {
		t.Errorf("b logged %d warnings, want %d", n, wantWarn)
	}
	for _, s := range []*logSink{aLog, bLog} {
		if n := s.count(slog.LevelError); n != 0 {
			t.Errorf("%d error logs under a sufficient Role, want none", n)
		}
	}
	// Each change of leader was recorded as an Event on the Lease, under
	// the same Role (Run waits for its Events before it returns).
	b.Stop()
	await(t, "b's Run to return", b.exited)
	evs, err := e.admin.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=LeaderElection"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Kind == "Lease" && ev.InvolvedObject.Name == "leasecron" && ev.Source.Component == "leasecron-test" {
			got = append(got, ev.Message)
		}
	}
	slices.Sort(got)
	if want := []string{"a became leader", "a stopped leading", "b became leader", "b stopped leading"}; !slices.Equal(got, want) {
		t.Errorf("LeaderElection Events on the Lease: %q, want %q", got, want)
	}
}

// A leader whose renewal meets a Lease that another writer gave to someone
// else (the API server refuses the stale update with a conflict) stops
// leading at its next renewal, without waiting out its renew deadline, and
// does not write the Lease back.
func (e *itEnv) testTakenByAnother(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	log := &logSink{}
	a := run(t, e.elector(t, e.cp.AdminConfig(), ns, "a", slog.New(log), func(c *LeaseConfig) {
		c.LeaseDuration, c.RenewDeadline = time.Minute, 50*time.Second
	}))
	await(t, "a to lead", a.leading)
	intruder := "x"
	var takenAt time.Time
	// The write races a's renewals: try again on a conflict.
	eventually(t, "the Lease written with another holder", func() bool {
		taken := e.lease(t, ns)
		taken.Spec.HolderIdentity = &intruder
		takenAt = time.Now()
		_, err := e.admin.CoordinationV1().Leases(ns).Update(context.Background(), taken, metav1.UpdateOptions{})
		if err != nil && !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
		return err == nil
	})
	await(t, "a's Run to return", a.exited)
	t.Logf("lease given to another holder: the leader gave up %s later (retry period %s)", time.Since(takenAt).Round(time.Millisecond), itRetry)
	if !errors.Is(a.err, ErrLeadershipLost) {
		t.Fatalf("Run = %v, want ErrLeadershipLost", a.err)
	}
	if n := log.count(slog.LevelError, "lost the lease", `"x" holds it now`); n != 1 {
		t.Errorf("%d errors naming the new holder, want 1", n)
	}
	if h := holder(e.lease(t, ns)); h != "x" {
		t.Fatalf("holder = %q, want x: the old leader wrote the Lease back", h)
	}
}

// runClientGo runs client-go's own elector (tools/leaderelection with a
// LeaseLock and ReleaseOnCancel, as its example does) as identity id on the
// same Lease. leading is closed when it starts leading; stop cancels it and
// waits until it has released the Lease.
func (e *itEnv) runClientGo(t *testing.T, ns, id string) (leading <-chan struct{}, stop func()) {
	t.Helper()
	client := kubernetes.NewForConfigOrDie(e.cp.AdminConfig())
	started := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: "leasecron", Namespace: ns},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration: itLease, RenewDeadline: itRenew, RetryPeriod: itRetry,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { close(started) },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); le.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return started, stop
}

// leasecron and client-go's own elector share a Lease: each takes over what
// the other released, and the count of transitions goes on from one to the
// other, so a Lease can move between them (for example during an upgrade
// from a client-go based controller) without a gap or two holders.
func (e *itEnv) testInteropWithClientGo(t *testing.T) {
	t.Parallel()
	ns := e.namespace(t)
	cgLeads, stopCG := e.runClientGo(t, ns, "client-go")
	await(t, "client-go's elector to lead", cgLeads)
	if h := holder(e.lease(t, ns)); h != "client-go" {
		t.Fatalf("holder = %q, want client-go", h)
	}
	bLog := &logSink{}
	b := run(t, e.elector(t, e.cp.AdminConfig(), ns, "b", slog.New(bLog), nil))
	eventually(t, "b's watch", func() bool { return bLog.count(slog.LevelDebug, watchingMsg) > 0 })
	if leading(b) {
		t.Fatal("b led while client-go's elector held the lease")
	}
	stopCG()
	await(t, "b to take over the Lease client-go released", b.leading)
	l := e.lease(t, ns)
	if h := holder(l); h != "b" || *l.Spec.LeaseTransitions != 1 {
		t.Fatalf("after client-go → b: holder %q, transitions %d; want b, 1", h, *l.Spec.LeaseTransitions)
	}

	cg2Leads, _ := e.runClientGo(t, ns, "client-go-2")
	b.Stop()
	await(t, "b's Run to return", b.exited)
	if b.err != nil {
		t.Fatalf("b's Run = %v, want nil", b.err)
	}
	await(t, "client-go's elector to take over the Lease b released", cg2Leads)
	l = e.lease(t, ns)
	if h := holder(l); h != "client-go-2" || *l.Spec.LeaseTransitions != 2 {
		t.Fatalf("after b → client-go-2: holder %q, transitions %d; want client-go-2, 2", h, *l.Spec.LeaseTransitions)
	}
}
