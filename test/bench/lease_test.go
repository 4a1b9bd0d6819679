//go:build bench

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

const (
	namespace     = "default"
	leaseDuration = 15 * time.Second // both contenders run with client-go's example timings
	steadyWindow  = 60 * time.Second
)

// cluster is the control plane the lease benchmarks share, with one
// ServiceAccount kubeconfig per contender slot, so the audit log tells the
// API requests of each process apart.
type cluster struct {
	cp         *kube.ControlPlane
	auditLog   string
	kubeconfig map[string]string // by ServiceAccount name
}

func startCluster(t *testing.T) *cluster {
	dir := t.TempDir()
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &cluster{auditLog: filepath.Join(dir, "audit.log"), kubeconfig: map[string]string{}}
	c.cp = kube.Start(t, kube.Options{ExtraAPIServerArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + c.auditLog}})
	admin, err := kubernetes.NewForConfig(c.cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}
	if _, err := admin.RbacV1().Roles(namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"bench-a", "bench-b"} {
		if _, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: sa},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "bench"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}},
		}
		if _, err := admin.RbacV1().RoleBindings(namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		hour := int64(3600)
		tok, err := admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.kubeconfig[sa] = c.cp.KubeconfigFor(t, &rest.Config{BearerToken: tok.Status.Token})
	}
	return c
}

// contender starts one elector process of kind ("leasecron" or "clientgo")
// for lease as ServiceAccount sa.
func (c *cluster) contender(t *testing.T, kind, lease, sa, id, dir string) *proc {
	if kind == "leasecron" {
		return start(t, id, bin.leasecron, "run", "--mode", "lease", "--kubeconfig", c.kubeconfig[sa],
			"--lease-name", lease, "--lease-namespace", namespace, "--identity", id,
			"--database-dsn", "sqlite://"+filepath.Join(dir, "db.sqlite"), "--http-addr", "127.0.0.1:0",
			"--log-format", "json", "--schedule", "daily-stats=@every 1h")
	}
	return start(t, id, bin.alt, "-mode", "clientgo", "-kubeconfig", c.kubeconfig[sa], "-namespace", namespace,
		"-lease-name", lease, "-identity", id)
}

func standbyMsg(kind string) string {
	if kind == "leasecron" {
		return "waiting for the lease"
	}
	return "standing by"
}

var kinds = []struct{ name, label string }{
	{"leasecron", "leasecron"},
	{"clientgo", "client-go leaderelection (its example: ReleaseOnCancel, 15s/10s/2s)"},
}

func benchLease(t *testing.T, r *report) {
	c := startCluster(t)
	trial := 0
	handover := func(kind string, sig syscall.Signal, timeout time.Duration) (time.Duration, bool) {
		trial++
		dir := t.TempDir()
		lease := fmt.Sprintf("bench-%d", trial)
		a := c.contender(t, kind, lease, "bench-a", fmt.Sprintf("a-%d", trial), dir)
		a.mustAwait(t, "leading", 60*time.Second)
		b := c.contender(t, kind, lease, "bench-b", fmt.Sprintf("b-%d", trial), dir)
		b.mustAwait(t, standbyMsg(kind), 30*time.Second)
		// Let the standby settle into its steady state (its first attempt
		// done, its watch or poll running) before the leader goes.
		time.Sleep(3 * time.Second)
		sent := time.Now()
		if err := a.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		at, ok := b.await("leading", timeout)
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		<-a.done
		<-b.done
		return at.Sub(sent), ok
	}

	graceful, crash := map[string]*series{}, map[string]*series{}
	for _, k := range kinds {
		graceful[k.name], crash[k.name] = &series{}, &series{}
		for i := 0; i < *trialsFlag; i++ {
			graceful[k.name].add(handover(k.name, syscall.SIGTERM, 30*time.Second))
		}
		for i := 0; i < max(3, *trialsFlag/2); i++ {
			crash[k.name].add(handover(k.name, syscall.SIGKILL, leaseDuration+30*time.Second))
		}
	}
	var gRows, cRows [][]string
	for _, k := range kinds {
		rc, rg := "—", "—"
		if k.name != "leasecron" {
			rg = ratio(*graceful["leasecron"], *graceful[k.name])
			rc = ratio(*crash["leasecron"], *crash[k.name])
		}
		gRows = append(gRows, []string{k.label, graceful[k.name].cell(), rg})
		cRows = append(cRows, []string{k.label, crash[k.name].cell(), rc})
	}
	r.add("Graceful handover (Lease)",
		"Two contenders on one Lease of a real kube-apiserver; the leader gets SIGTERM and releases the Lease; "+
			"time until the follower's first `leading` line (leasecron: its new term begun and its scheduler started). "+
			"Target: leasecron under 250 ms; client-go's follower waits for its next poll (2 s retry period, with jitter).",
		[]string{"contender", "handover", "leasecron is"}, gRows)
	r.add("Crash takeover (Lease)",
		fmt.Sprintf("As above, but the leader gets SIGKILL and cannot release the Lease: the follower must wait until "+
			"the Lease expires, %s after the leader's last renewal (the floor; the renewal came up to a retry period "+
			"before the kill, so the time from the kill can be a little under %s). Target: within the lease duration + 1 s.", leaseDuration, leaseDuration),
		[]string{"contender", "takeover", "leasecron is"}, cRows)

	var sRows [][]string
	for _, k := range kinds {
		sRows = append(sRows, c.steady(t, k.name, k.label)...)
	}
	r.add("Steady state",
		fmt.Sprintf("A leader and a follower on one Lease, measured over %s after a 5 s warm-up: resident memory at the end "+
			"(VmRSS, which counts the pages of the executable mapped from the page cache, and of it the process's own anonymous memory), "+
			"CPU time over the window, and API requests each sent (counted in the apiserver's audit log; a watch counts once). "+
			"Target: RSS under 30 MiB; no more requests per follower than client-go's.", steadyWindow),
		[]string{"process", "RSS", "CPU", "API requests / min"}, sRows)
}

// steady runs a leader and a follower of kind for steadyWindow and returns
// one row for each.
func (c *cluster) steady(t *testing.T, kind, label string) [][]string {
	dir := t.TempDir()
	lease := "steady-" + kind
	a := c.contender(t, kind, lease, "bench-a", "leader", dir)
	a.mustAwait(t, "leading", 60*time.Second)
	b := c.contender(t, kind, lease, "bench-b", "follower", dir)
	b.mustAwait(t, standbyMsg(kind), 30*time.Second)
	time.Sleep(5 * time.Second) // warm-up: the window measures the steady state, not the start
	from := time.Now()
	cpu0 := []time.Duration{cpuTime(t, a), cpuTime(t, b)}
	time.Sleep(steadyWindow) // the measurement window itself
	to := time.Now()
	cpu1 := []time.Duration{cpuTime(t, a), cpuTime(t, b)}
	reqs := c.requests(t, from, to)
	var rows [][]string
	for i, p := range []*proc{a, b} {
		role := []string{"leader", "follower"}[i]
		sa := []string{"bench-a", "bench-b"}[i]
		cpu := cpu1[i] - cpu0[i]
		rows = append(rows, []string{
			fmt.Sprintf("%s, %s", label, role),
			fmt.Sprintf("%.1f MiB (%.1f MiB anonymous)", float64(status(t, p, "VmRSS"))/(1<<20), float64(status(t, p, "RssAnon"))/(1<<20)),
			fmt.Sprintf("%s (%.2f%% of a core)", cpu.Round(time.Millisecond), 100*cpu.Seconds()/to.Sub(from).Seconds()),
			fmt.Sprintf("%.1f", float64(reqs["system:serviceaccount:"+namespace+":"+sa])/to.Sub(from).Minutes()),
		})
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	<-a.done
	<-b.done
	return rows
}

// requests counts the API requests per user received between from and to.
func (c *cluster) requests(t *testing.T, from, to time.Time) map[string]int {
	f, err := os.Open(c.auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e struct {
			AuditID string `json:"auditID"`
			User    struct {
				Username string `json:"username"`
			} `json:"user"`
			Received time.Time `json:"requestReceivedTimestamp"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || seen[e.AuditID] || e.Received.Before(from) || e.Received.After(to) {
			continue
		}
		seen[e.AuditID] = true
		counts[e.User.Username]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// cpuTime is the user and system CPU time p has used.
func cpuTime(t *testing.T, p *proc) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and stime
	// are the 12th and 13th of them, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100)
}

// status reads a memory field of p's /proc status (VmRSS, RssAnon) in bytes.
func status(t *testing.T, p *proc, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s for %s", field, p.name)
	return 0
}

// benchElection runs the side-by-side fault matrix of election_test.go with
// client-go's default timings and adds its table to the report.
func benchElection(t *testing.T, r *report) {
	cp := kube.Start(t, kube.Options{})
	tm := electionTimings{lease: leaseDuration, renew: 10 * time.Second, retry: 2 * time.Second, window: 30 * time.Second}
	results, cases := runElectionMatrix(t, cp, tm)
	checkElection(t, results, cases)
	header, rows := electionTable(results, cases)
	var b strings.Builder
	fmt.Fprintf(&b, "client-go's own `LeaderElector` (tools/leaderelection, LeaseLock, ReleaseOnCancel) and leasecron's Lease elector, "+
		"in one process each pair, on a real kube-apiserver, each behind the same fault-injecting RoundTripper "+
		"(`rest.Config.WrapTransport`), with client-go's default timings (%s/%s/%s). For each fault a leader and a follower "+
		"of one kind share a Lease; the faults act for %s on a leader that stays alive, then the leader shuts down "+
		"(unless the fault says otherwise). Overlap: the longest time both believed they led (the safety property: "+
		"`make test` runs the same matrix with a 2 s lease and fails if leasecron's is longer than client-go's, or if "+
		"leasecron's follower never takes over where client-go's does). Takeover: from the shutdown (or the event named) "+
		"to the follower leading. Requests: the follower's, over the window (a watch counts once). One trial per cell.\n",
		tm.lease, tm.renew, tm.retry, tm.window)
	for _, c := range cases {
		fmt.Fprintf(&b, "\n- %s: %s", c.name, c.what)
	}
	r.add("Election under faults (Lease, side by side with client-go)", b.String(), header, rows)
}
