// Package kube runs a real, minimal Kubernetes control plane for tests:
// etcd, kube-apiserver and (optionally) kube-controller-manager, as child
// processes on free loopback ports.
//
// # Design
//
// The binaries are built from source by hack/tools/build.sh (from the pinned
// modules under hack/tools/) into .cache/tools/bin (or $LEASECRON_TOOLS_DIR);
// nothing is downloaded at test time and no Docker or kubelet is involved, so
// Pods created by controllers stay Pending unless a PodRunner
// (StartPodRunner) runs them as local processes in a kubelet's place, with
// their volumes, environment, probes, restarts and status, and their
// configMap and secret volumes refreshed while they run (see PodRunner). A
// missing binary fails the test (never skips it) with a message naming
// hack/tools/build.sh.
//
// Start writes everything into one t.TempDir(): a CA, the apiserver serving
// certificate (127.0.0.1, localhost, kubernetes.default...), the ServiceAccount
// signing key pair, a token-auth file with one cluster-admin token (user
// "leasecron-admin", group system:masters), an admin kubeconfig, etcd's data
// dir and one log file per process. The apiserver runs with RBAC authorization,
// so credentials other than the admin's (for example a ServiceAccount token
// minted with TokenRequest and turned into a kubeconfig with KubeconfigFor) see
// real RBAC decisions.
//
// Readiness is polled, never slept for: etcd's /health, the apiserver's /readyz
// (which covers etcd connectivity and the RBAC bootstrap post-start hooks) and
// the controller manager's /healthz, with a short interval and a deadline
// (Options.StartTimeout). When a process exits early or misses the deadline the
// test fails with the tail of its log. Ports are picked by binding :0 and
// releasing; if a server loses that race ("address already in use") it is
// restarted on new ports.
//
// Every child gets its own process group and Pdeathsig=SIGKILL, so it dies with
// the test binary even when cleanup does not run (panic, -timeout, kill -9).
// Normally t.Cleanup stops the controller manager, the apiserver and etcd in
// that order (SIGTERM, then SIGKILL after a grace period) and the temp dir is
// removed afterwards; when the test failed, the tails of all logs are logged first.
//
// Namespace creates a namespace that can hold Pods at once (its "default"
// ServiceAccount exists), and ServiceAccountConfig returns the credentials of
// a new ServiceAccount with exactly the RBAC rules a test gives it, once the
// authorizer grants them.
//
// StopAPIServer and StartAPIServer stop and restart only the apiserver, on the
// same port and the same etcd, for outage tests; clients built from AdminConfig
// keep working once it is back.
package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	adminUser        = "leasecron-admin"
	serviceCIDR      = "10.0.0.0/24"
	serviceClusterIP = "10.0.0.1" // first address of serviceCIDR: the kubernetes.default Service
	saIssuer         = "https://kubernetes.default.svc.cluster.local"

	// Grace periods between SIGTERM and SIGKILL.
	apiserverGrace = 15 * time.Second
	etcdGrace      = 10 * time.Second
	kcmGrace       = 5 * time.Second

	maxPortAttempts = 3
)

// Options configures Start.
type Options struct {
	// ControllerManager also starts kube-controller-manager (all default
	// controllers: Deployments become ReplicaSets and Pods, namespaces get their
	// "default" ServiceAccount, garbage collection, ...). Without it, Pods cannot
	// be created in new namespaces (no "default" ServiceAccount appears).
	ControllerManager bool

	// StartTimeout bounds the startup of each component (default 90s: generous
	// because CI runs on 2 loaded cores; a healthy apiserver is ready in ~3s).
	StartTimeout time.Duration

	// ExtraAPIServerArgs and ExtraControllerManagerArgs are appended to the
	// generated command lines (later flags win), e.g. "--feature-gates=...".
	ExtraAPIServerArgs         []string
	ExtraControllerManagerArgs []string
}

// ControlPlane is a running control plane started by Start.
type ControlPlane struct {
	dir  string
	pki  *pki
	opts Options

	etcdBin, apiserverBin, kcmBin string
	etcdURL                       string
	apiPort                       int
	host                          string // https://127.0.0.1:<apiPort>
	adminKubeconfig               string

	mu        sync.Mutex
	etcd      *proc
	apiserver *proc
	kcm       *proc
}

// Start starts etcd, kube-apiserver and (if opts.ControllerManager) kube-controller-manager on free loopback ports
// in a t.TempDir(); everything is stopped (SIGTERM then SIGKILL) and removed in t.Cleanup. It fails the test (t.Fatal, never skip)
// with a message naming hack/tools/build.sh when a binary is missing.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 90 * time.Second
	}
	c := &ControlPlane{opts: opts}
	var err error
	if c.etcdBin, err = ToolPath("etcd"); err != nil {
		t.Fatal(err)
	}
	if c.apiserverBin, err = ToolPath("kube-apiserver"); err != nil {
		t.Fatal(err)
	}
	if opts.ControllerManager {
		if c.kcmBin, err = ToolPath("kube-controller-manager"); err != nil {
			t.Fatal(err)
		}
	}

	// TempDir's own cleanup is registered first, so it runs after stopAll.
	c.dir = t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails(t)
		}
		c.stopAll()
	})
	if c.pki, err = writePKI(c.dir); err != nil {
		t.Fatalf("kube: generating certificates: %v", err)
	}

	begin := time.Now()
	if err := c.startEtcd(); err != nil {
		t.Fatalf("kube: %v", err)
	}
	etcdDone := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			t.Fatalf("kube: %v", err)
		}
		c.apiPort = ports[0]
		c.host = fmt.Sprintf("https://127.0.0.1:%d", c.apiPort)
		err = c.StartAPIServer(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, errAddrInUse) || attempt == maxPortAttempts {
			t.Fatalf("kube: %v", err)
		}
	}
	apiDone := time.Now()

	c.adminKubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := clientcmd.WriteToFile(*c.kubeconfig(c.AdminConfig()), c.adminKubeconfig); err != nil {
		t.Fatalf("kube: writing admin kubeconfig: %v", err)
	}

	if opts.ControllerManager {
		if err := c.startKCM(); err != nil {
			t.Fatalf("kube: %v", err)
		}
	}
	t.Logf("kube: control plane ready at %s in %s (etcd %s, kube-apiserver %s, kube-controller-manager %s); logs in %s",
		c.host, time.Since(begin).Round(time.Millisecond), etcdDone.Sub(begin).Round(time.Millisecond),
		apiDone.Sub(etcdDone).Round(time.Millisecond), kcmNote(opts.ControllerManager, time.Since(apiDone)), c.dir)
	return c
}

func kcmNote(on bool, d time.Duration) string {
	if !on {
		return "off"
	}
	return d.Round(time.Millisecond).String()
}

func (c *ControlPlane) startEtcd() error {
	dataDir := filepath.Join(c.dir, "etcd")
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		_ = os.RemoveAll(dataDir) // a failed attempt may have initialised it with the old peer URL
		args := []string{
			"--name=testenv",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=testenv=" + peer,
			"--initial-cluster-state=new",
			"--unsafe-no-fsync", // test data only: don't pay for fsync on a shared disk
			"--snapshot-count=10000",
			"--log-level=warn",
		}
		p, err := startProc("etcd", c.etcdBin, args, filepath.Join(c.dir, "etcd.log"))
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.etcd = p
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.StartTimeout)
		err = waitReady(ctx, p, &http.Client{Transport: &http.Transport{Proxy: nil}}, client+"/health", "",
			func(b []byte) bool { return strings.Contains(string(b), `"health":"true"`) })
		cancel()
		if err == nil {
			c.etcdURL = client
			return nil
		}
		p.stop(etcdGrace)
		if !errors.Is(err, errAddrInUse) || attempt == maxPortAttempts {
			return fmt.Errorf("%v\n--- tail of %s:\n%s", err, p.logPath, p.tail(30))
		}
	}
}

func (c *ControlPlane) apiserverArgs() []string {
	p := c.pki
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + itoa(c.apiPort),
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none", // a loopback advertise address is refused by the lease reconciler
		"--cert-dir=" + filepath.Join(c.dir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servKey,
		"--client-ca-file=" + p.caCert,
		"--token-auth-file=" + p.tokenFile,
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-account-issuer=" + saIssuer,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		// Without this, SIGTERM with open watches (the controller manager's
		// informers) hangs until SIGKILL: graceful shutdown waits for
		// long-running requests that never end. With it, watches are closed and
		// the apiserver exits in ~1s.
		"--shutdown-watch-termination-grace-period=2s",
	}
	return append(args, c.opts.ExtraAPIServerArgs...)
}

// StartAPIServer (re)starts kube-apiserver on the control plane's port against
// the same etcd and waits until /readyz is ok or ctx is done. It is a no-op if
// the apiserver is already running. On failure the error includes the log tail.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver != nil && !c.apiserver.exited() {
		return nil
	}
	p, err := startProc("kube-apiserver", c.apiserverBin, c.apiserverArgs(), filepath.Join(c.dir, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	c.apiserver = p
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.caPEM)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.StartTimeout)
		defer cancel()
	}
	err = waitReady(ctx, p, client, c.host+"/readyz?verbose", c.pki.adminToken,
		func(b []byte) bool { return strings.Contains(string(b), "readyz check passed") })
	if err != nil {
		p.stop(apiserverGrace)
		return fmt.Errorf("%w\n--- tail of %s:\n%s", err, p.logPath, p.tail(40))
	}
	return nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after a grace
// period; it closes its listener at once and exits in about a second) and
// returns once the process is gone; etcd and the controller
// manager keep running. StartAPIServer brings it back on the same port.
func (c *ControlPlane) StopAPIServer() {
	c.mu.Lock()
	p := c.apiserver
	c.mu.Unlock()
	p.stop(apiserverGrace)
}

// RestartControllerManager stops kube-controller-manager and starts it
// again with args in place of Options.ExtraControllerManagerArgs (later
// flags win, so "--controllers=*,-cronjob-controller" turns one controller
// off), and returns once it is healthy; it appends to the same log file. It
// fails the test if the control plane was started without one.
func (c *ControlPlane) RestartControllerManager(t testing.TB, args ...string) {
	t.Helper()
	if !c.opts.ControllerManager {
		t.Fatal("kube: RestartControllerManager on a control plane started without Options.ControllerManager")
	}
	c.mu.Lock()
	kcm := c.kcm
	c.opts.ExtraControllerManagerArgs = args
	c.mu.Unlock()
	kcm.stop(kcmGrace)
	if err := c.startKCM(); err != nil {
		t.Fatalf("kube: %v", err)
	}
}

func (c *ControlPlane) startKCM() error {
	p := c.pki
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		args := []string{
			"--kubeconfig=" + c.adminKubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + itoa(ports[0]),
			"--cert-dir=" + filepath.Join(c.dir, "kcm-certs"),
			"--leader-elect=false",
			"--controllers=*",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + p.saKey,
			"--root-ca-file=" + p.caCert,
			"--cluster-signing-cert-file=" + p.caCert,
			"--cluster-signing-key-file=" + p.caKey,
			"--service-cluster-ip-range=" + serviceCIDR,
			"--profiling=false",
		}
		args = append(args, c.opts.ExtraControllerManagerArgs...)
		pr, err := startProc("kube-controller-manager", c.kcmBin, args, filepath.Join(c.dir, "kube-controller-manager.log"))
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.kcm = pr
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.StartTimeout)
		client := insecureLocalClient()
		err = waitReady(ctx, pr, client, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0]), "",
			func(b []byte) bool { return strings.TrimSpace(string(b)) == "ok" })
		cancel()
		client.CloseIdleConnections()
		if err == nil {
			return nil
		}
		pr.stop(kcmGrace)
		if !errors.Is(err, errAddrInUse) || attempt == maxPortAttempts {
			return fmt.Errorf("%v\n--- tail of %s:\n%s", err, pr.logPath, pr.tail(40))
		}
	}
}

func (c *ControlPlane) stopAll() {
	c.mu.Lock()
	kcm, api, etcd := c.kcm, c.apiserver, c.etcd
	c.mu.Unlock()
	kcm.stop(kcmGrace)
	api.stop(apiserverGrace)
	etcd.stop(etcdGrace)
}

func (c *ControlPlane) logTails(t testing.TB) {
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		path := filepath.Join(c.dir, name+".log")
		if _, err := os.Stat(path); err == nil {
			t.Logf("kube: --- tail of %s:\n%s", path, tailFile(path, 50))
		}
	}
}

// Host is the apiserver URL, https://127.0.0.1:<port>.
func (c *ControlPlane) Host() string { return c.host }

// CAData is the PEM CA bundle that verifies the apiserver's serving certificate.
func (c *ControlPlane) CAData() []byte { return append([]byte(nil), c.pki.caPEM...) }

// Dir is the control plane's temp dir (certificates, kubeconfigs, etcd data and
// the etcd.log, kube-apiserver.log and kube-controller-manager.log files).
func (c *ControlPlane) Dir() string { return c.dir }

// AdminConfig returns a new cluster-admin rest.Config (bearer token of a user in
// group system:masters, CA-verified TLS). Callers may modify it.
func (c *ControlPlane) AdminConfig() *rest.Config {
	return &rest.Config{
		Host:            c.host,
		BearerToken:     c.pki.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData()},
		QPS:             50,
		Burst:           100,
	}
}

// AdminKubeconfig returns the path of a cluster-admin kubeconfig file (for
// kubectl, helm or leasecron --kubeconfig).
func (c *ControlPlane) AdminKubeconfig() string { return c.adminKubeconfig }

// KubeconfigFor writes a kubeconfig file for cfg's credentials (bearer token or
// token file, client certificate, basic auth, impersonation) into the control
// plane's dir and returns its path. An empty cfg.Host means this apiserver and
// a cfg without CA data or file trusts this control plane's CA.
func (c *ControlPlane) KubeconfigFor(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	f, err := os.CreateTemp(c.dir, "kubeconfig-*.yaml")
	if err != nil {
		t.Fatalf("kube: %v", err)
	}
	f.Close()
	if err := clientcmd.WriteToFile(*c.kubeconfig(cfg), f.Name()); err != nil {
		t.Fatalf("kube: writing kubeconfig: %v", err)
	}
	return f.Name()
}

func (c *ControlPlane) kubeconfig(cfg *rest.Config) *clientcmdapi.Config {
	cluster := clientcmdapi.NewCluster()
	cluster.Server = cfg.Host
	if cluster.Server == "" {
		cluster.Server = c.host
	}
	cluster.TLSServerName = cfg.ServerName
	cluster.InsecureSkipTLSVerify = cfg.Insecure
	cluster.CertificateAuthority = cfg.CAFile
	cluster.CertificateAuthorityData = cfg.CAData
	if !cfg.Insecure && cfg.CAFile == "" && len(cfg.CAData) == 0 {
		cluster.CertificateAuthorityData = c.CAData()
	}

	user := clientcmdapi.NewAuthInfo()
	user.Token = cfg.BearerToken
	user.TokenFile = cfg.BearerTokenFile
	user.ClientCertificate = cfg.CertFile
	user.ClientCertificateData = cfg.CertData
	user.ClientKey = cfg.KeyFile
	user.ClientKeyData = cfg.KeyData
	user.Username = cfg.Username
	user.Password = cfg.Password
	user.Impersonate = cfg.Impersonate.UserName
	user.ImpersonateUID = cfg.Impersonate.UID
	user.ImpersonateGroups = cfg.Impersonate.Groups
	user.ImpersonateUserExtra = cfg.Impersonate.Extra

	ctx := clientcmdapi.NewContext()
	ctx.Cluster = "leasecron-testenv"
	ctx.AuthInfo = "user"

	kc := clientcmdapi.NewConfig()
	kc.Clusters[ctx.Cluster] = cluster
	kc.AuthInfos[ctx.AuthInfo] = user
	kc.Contexts["leasecron-testenv"] = ctx
	kc.CurrentContext = "leasecron-testenv"
	return kc
}
