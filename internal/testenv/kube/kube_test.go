package kube_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

func TestToolPathMissing(t *testing.T) {
	t.Setenv(kube.ToolsDirEnv, t.TempDir())
	_, err := kube.ToolPath("etcd")
	if err == nil {
		t.Fatal("ToolPath: want error for a missing binary")
	}
	if want := "hack/tools/build.sh"; !strings.Contains(err.Error(), want) {
		t.Fatalf("ToolPath error %q does not name %s", err, want)
	}
}

func TestControlPlane(t *testing.T) {
	cp := kube.Start(t, kube.Options{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	v, err := admin.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version = %q, want v1.37.2 (version ldflags missing in hack/tools/build.sh?)", v.GitVersion)
	}

	// The admin kubeconfig file must load and reach the same server.
	if _, err := os.Stat(cp.AdminKubeconfig()); err != nil {
		t.Fatal(err)
	}
	kcfg, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig())
	if err != nil {
		t.Fatalf("loading admin kubeconfig: %v", err)
	}
	if _, err := kubernetes.NewForConfigOrDie(kcfg).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("get namespace default via admin kubeconfig: %v", err)
	}

	const ns = "leasecron-test"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}

	// Lease round trip.
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "leasecron-leader", Namespace: ns},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptrTo("replica-a"),
			LeaseDurationSeconds: ptrTo[int32](15),
			AcquireTime:          &metav1.MicroTime{Time: time.Now()},
		},
	}
	if _, err := admin.CoordinationV1().Leases(ns).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create lease: %v", err)
	}
	got, err := admin.CoordinationV1().Leases(ns).Get(ctx, lease.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get lease: %v", err)
	}
	if h := deref(got.Spec.HolderIdentity); h != "replica-a" {
		t.Fatalf("lease holder = %q, want replica-a", h)
	}

	// The controller manager turns a Deployment into a ReplicaSet and Pods
	// (which stay Pending: there is no kubelet).
	sel := map[string]string{"app": "leasecron-demo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptrTo[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "main", Image: "registry.invalid/leasecron:test",
				}}},
			},
		},
	}
	if _, err := admin.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	start := time.Now()
	var pods *corev1.PodList
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err = admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 2, nil
	})
	if err != nil {
		n := -1
		if pods != nil {
			n = len(pods.Items)
		}
		t.Fatalf("waiting for 2 pods of the deployment (have %d): %v", n, err)
	}
	t.Logf("deployment produced 2 pods in %s", time.Since(start).Round(time.Millisecond))

	// A ServiceAccount token minted via TokenRequest is subject to RBAC.
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create serviceaccount: %v", err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "nobody", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	saCfg := &rest.Config{Host: cp.Host(), BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cp.CAData()}}
	sa := kubernetes.NewForConfigOrDie(saCfg)
	_, err = sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets as serviceaccount nobody: err = %v, want Forbidden", err)
	}
	// The same through a kubeconfig file written by KubeconfigFor.
	path := cp.KubeconfigFor(t, &rest.Config{BearerToken: tr.Status.Token})
	if filepath.Dir(path) != cp.Dir() {
		t.Errorf("KubeconfigFor wrote %s outside the control plane dir %s", path, cp.Dir())
	}
	fileCfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("loading SA kubeconfig: %v", err)
	}
	_, err = kubernetes.NewForConfigOrDie(fileCfg).CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets via SA kubeconfig: err = %v, want Forbidden", err)
	}
	// ...while the token does authenticate (self subject review is allowed for everyone).
	ssr, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review as SA: %v", err)
	}
	if want := "system:serviceaccount:" + ns + ":nobody"; ssr.Status.UserInfo.Username != want {
		t.Fatalf("SA token authenticates as %q, want %q", ssr.Status.UserInfo.Username, want)
	}

	// kubectl and helm (built with version ldflags) accept this apiserver.
	out := runTool(t, "kubectl", "--kubeconfig", cp.AdminKubeconfig(), "get", "leases", "-n", ns, "-o", "name")
	if strings.TrimSpace(out) != "lease.coordination.k8s.io/leasecron-leader" {
		t.Fatalf("kubectl get leases: %q", out)
	}
	chart := filepath.Join(t.TempDir(), "demo")
	writeFiles(t, chart, map[string]string{
		"Chart.yaml":               "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: \">=1.30.0-0\"\n",
		"templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  k: v\n",
	})
	runTool(t, "helm", "--kubeconfig", cp.AdminKubeconfig(), "install", "demo", chart, "-n", ns, "--wait", "--timeout", "60s")
	if _, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, "demo-cm", metav1.GetOptions{}); err != nil {
		t.Fatalf("configmap from helm release: %v", err)
	}

	// Apiserver outage: stop it, check it is really down, restart on the same port.
	cp.StopAPIServer()
	down := kubernetes.NewForConfigOrDie(withTimeout(cp.AdminConfig(), 2*time.Second))
	if _, err := down.CoordinationV1().Leases(ns).Get(ctx, lease.Name, metav1.GetOptions{}); err == nil {
		t.Fatal("apiserver still answering after StopAPIServer")
	}
	restart := time.Now()
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatalf("restart apiserver: %v", err)
	}
	t.Logf("apiserver restarted in %s", time.Since(restart).Round(time.Millisecond))
	// The client created before the outage keeps working.
	got, err = admin.CoordinationV1().Leases(ns).Get(ctx, lease.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get lease after apiserver restart: %v", err)
	}
	if h := deref(got.Spec.HolderIdentity); h != "replica-a" {
		t.Fatalf("lease holder after restart = %q, want replica-a", h)
	}
}

// runTool runs a tool built by hack/tools/build.sh with a private HOME (helm and
// kubectl caches) and returns its stdout; it fails the test on error.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	bin, err := kube.ToolPath(name)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+home+"/.cache",
		"XDG_CONFIG_HOME="+home+"/.config", "XDG_DATA_HOME="+home+"/.local/share")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func withTimeout(cfg *rest.Config, d time.Duration) *rest.Config {
	cfg.Timeout = d
	return cfg
}

func ptrTo[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
