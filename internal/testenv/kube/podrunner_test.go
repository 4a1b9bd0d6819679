package kube_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

// TestPodRunner runs shell Pods through the pod runner: binding, env and
// volume resolution, a ServiceAccount kubeconfig, exit codes of
// restartPolicy Never, a crash and restart, a freeze and thaw, and graceful
// deletion.
func TestPodRunner(t *testing.T) {
	cp := kube.Start(t, kube.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	runner := cp.StartPodRunner(t, kube.PodRunnerOptions{
		Images: func(ref string) (kube.Image, bool) {
			if ref != "shell" {
				return kube.Image{}, false
			}
			return kube.Image{Entrypoint: []string{"/bin/sh", "-c"}, Env: []string{"PATH=/usr/bin:/bin"}}, true
		},
		KubeconfigEnv: "TEST_KUBECONFIG",
	})
	if n, err := admin.CoreV1().Nodes().Get(ctx, runner.Node(), metav1.GetOptions{}); err != nil || !nodeReady(n) {
		t.Fatalf("node %s: ready=%v, err=%v", runner.Node(), n != nil && nodeReady(n), err)
	}

	const ns = "runner"
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	})
	// No controller manager: create what it would (the default
	// ServiceAccount and the root CA ConfigMap).
	mustCreate(t, func() error {
		_, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"},
			Data: map[string]string{"ca.crt": string(cp.CAData())}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"},
			StringData: map[string]string{"dsn": "mysql://u:p@h/db"}}, metav1.CreateOptions{})
		return err
	})

	t.Run("env-volumes-exit-code", func(t *testing.T) {
		script := `set -e
test "$POD_NAME" = envpod
test "$POD_NAMESPACE" = runner
test "$NODE" = testenv-node
test "$IP" = 127.0.0.1
test "$SECRET" = "mysql://u:p@h/db"
test "$MEM" = 64
test "$COMBINED" = "envpod/runner"
test "$(cat $1)" = "mysql://u:p@h/db"
grep -q tokenFile "$TEST_KUBECONFIG"
echo "listen=$2"
exit 3`
		pod := shellPod("envpod", corev1.RestartPolicyNever, script, "/etc/db/dsn", ":8080")
		c := &pod.Spec.Containers[0]
		c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
		c.Env = []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "dsn"}}},
			{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.memory", Divisor: resourceMi}}},
			{Name: "COMBINED", Value: "$(POD_NAME)/$(POD_NAMESPACE)"},
		}
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource64Mi}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "db", MountPath: "/etc/db", ReadOnly: true}}
		pod.Spec.Volumes = []corev1.Volume{{Name: "db", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: "db", DefaultMode: ptrTo[int32](0o440)}}}}
		pod.Spec.AutomountServiceAccountToken = ptrTo(true)
		create(t, admin, ns, pod)
		p := waitPod(t, admin, ns, "envpod", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		logs := runner.Logs(ns, "envpod")
		if st := p.Status.ContainerStatuses; len(st) != 1 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 3 {
			t.Fatalf("container status %+v, want terminated with exit code 3; logs:\n%s", st, logs)
		}
		if p.Spec.NodeName != runner.Node() {
			t.Errorf("pod bound to %q, want %q", p.Spec.NodeName, runner.Node())
		}
		if !strings.Contains(logs, "listen=127.0.0.1:") {
			t.Errorf("the listen address :8080 was not mapped to a loopback port; logs:\n%s", logs)
		}
	})

	t.Run("crash-restart-delete", func(t *testing.T) {
		// The trap proves SIGTERM arrives on deletion.
		pod := shellPod("sleeper", corev1.RestartPolicyAlways, `trap 'echo got SIGTERM; exit 0' TERM; echo started; while :; do sleep 0.1; done`)
		pod.Spec.TerminationGracePeriodSeconds = ptrTo[int64](5)
		create(t, admin, ns, pod)
		waitPod(t, admin, ns, "sleeper", ready)
		if err := runner.Kill(ns, "sleeper"); err != nil {
			t.Fatal(err)
		}
		p := waitPod(t, admin, ns, "sleeper", func(p *corev1.Pod) bool {
			st := p.Status.ContainerStatuses
			return ready(p) && len(st) == 1 && st[0].RestartCount == 1
		})
		if lt := p.Status.ContainerStatuses[0].LastTerminationState.Terminated; lt == nil || lt.ExitCode != 137 {
			t.Errorf("last termination %+v, want exit code 137", lt)
		}
		if err := admin.CoreV1().Pods(ns).Delete(ctx, "sleeper", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := admin.CoreV1().Pods(ns).Get(ctx, "sleeper", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Fatalf("pod not removed after deletion: %v", err)
		}
		logs := runner.Logs(ns, "sleeper")
		if strings.Count(logs, "started") != 2 || !strings.Contains(logs, "got SIGTERM") {
			t.Errorf("want two starts and a SIGTERM; logs:\n%s", logs)
		}
	})

	t.Run("freeze-thaw", func(t *testing.T) {
		pod := shellPod("ticker", corev1.RestartPolicyAlways, `while :; do echo tick; sleep 0.05; done`)
		pod.Spec.TerminationGracePeriodSeconds = ptrTo[int64](1)
		create(t, admin, ns, pod)
		waitPod(t, admin, ns, "ticker", ready)
		ticks := func() int { return strings.Count(runner.Logs(ns, "ticker"), "tick") }
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return ticks() >= 3, nil
		}); err != nil {
			t.Fatalf("the ticker did not tick: %d ticks", ticks())
		}
		if err := runner.Freeze(ns, "ticker"); err != nil {
			t.Fatal(err)
		}
		// Lines written just before the stop may still be in the pipe.
		time.Sleep(200 * time.Millisecond)
		frozen := ticks()
		time.Sleep(500 * time.Millisecond) // ten ticks' time passes
		if n := ticks(); n != frozen {
			t.Errorf("a frozen container ticked %d times in 500ms", n-frozen)
		}
		if err := runner.Thaw(ns, "ticker"); err != nil {
			t.Fatal(err)
		}
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return ticks() >= frozen+3, nil
		}); err != nil {
			t.Errorf("the thawed container does not tick again: %d ticks, %d when frozen", ticks(), frozen)
		}
		p, err := admin.CoreV1().Pods(ns).Get(ctx, "ticker", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if st := p.Status.ContainerStatuses; len(st) != 1 || st[0].RestartCount != 0 || st[0].State.Running == nil {
			t.Errorf("container status %+v after a freeze, want running and never restarted", st)
		}
		// A frozen container still stops on deletion.
		if err := runner.Freeze(ns, "ticker"); err != nil {
			t.Fatal(err)
		}
		if err := admin.CoreV1().Pods(ns).Delete(ctx, "ticker", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := admin.CoreV1().Pods(ns).Get(ctx, "ticker", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}); err != nil {
			t.Fatalf("a frozen pod was not removed after deletion: %v", err)
		}
	})

	t.Run("unknown-image", func(t *testing.T) {
		pod := shellPod("noimage", corev1.RestartPolicyAlways, "true")
		pod.Spec.Containers[0].Image = "registry.invalid/none"
		create(t, admin, ns, pod)
		waitPod(t, admin, ns, "noimage", func(p *corev1.Pod) bool {
			st := p.Status.ContainerStatuses
			return len(st) == 1 && st[0].State.Waiting != nil && st[0].State.Waiting.Reason == "ErrImagePull"
		})
	})

	t.Run("configmap-secret-refresh", func(t *testing.T) { testVolumeRefresh(t, admin, runner, ns) })

	// Stop leaves no process and no directory behind.
	runner.Stop()
	if err := runner.Kill(ns, "noimage"); err == nil {
		t.Error("Kill after Stop succeeded")
	}
	if _, err := os.Stat(runner.Dir()); !os.IsNotExist(err) {
		t.Errorf("runner dir %s still there after Stop (%v)", runner.Dir(), err)
	}
}

var (
	resourceMi   = resource.MustParse("1Mi")
	resource64Mi = resource.MustParse("64Mi")
)

func shellPod(name string, policy corev1.RestartPolicy, script string, args ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                policy,
			AutomountServiceAccountToken: ptrTo(false),
			Containers: []corev1.Container{{Name: "main", Image: "shell",
				Args: append([]string{script, "sh"}, args...)}},
		},
	}
}

func create(t *testing.T, c kubernetes.Interface, ns string, p *corev1.Pod) {
	t.Helper()
	if _, err := c.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
}

func mustCreate(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

func waitPod(t *testing.T, c kubernetes.Interface, ns, name string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		p, err = c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && ok(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s: condition not met: %v; status %+v", name, err, p.Status)
	}
	return p
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// testVolumeRefresh: a running Pod's configMap and secret volumes follow
// their objects, atomically and in the kubelet's layout, while a subPath
// mount of the same ConfigMap keeps the version the container started with
// (and a restarted container gets the current one).
//
// The Pod reads the large "value" key in a tight loop, each read one open
// (awk), and logs each version it sees; a version is one tag repeated at
// both ends of a fixed length, so a torn, truncated or empty read shows as
// "partial" (a read that finds no file at all, "unreadable", is what a
// kubelet's readers can see too). It logs the subPath-mounted "tag" key and the secret's "token"
// whenever it reads a new version and when they change.
func testVolumeRefresh(t *testing.T, admin kubernetes.Interface, runner *kube.PodRunner, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const fill = 256 << 10
	version := func(n int) map[string]string {
		tag := fmt.Sprintf("v%03d", n)
		return map[string]string{"value": tag + " " + strings.Repeat(string(rune('a'+n%26)), fill) + " " + tag, "tag": tag}
	}
	size := len(version(1)["value"])
	cms := admin.CoreV1().ConfigMaps(ns)
	secrets := admin.CoreV1().Secrets(ns)
	mustCreate(t, func() error {
		_, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "live"}, Data: version(1)}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "live"},
			StringData: map[string]string{"token": "s1"}}, metav1.CreateOptions{})
		return err
	})

	script := `f=$1 s=$2 d=$3 k=$4
echo "layout data=$(readlink "$d/..data") value=$(readlink "$d/value") tag=$(readlink "$d/tag")"
read -r sub < "$s"; echo "sub $sub"
read -r tok < "$k"; echo "secret $tok"
last=
while :; do
  r=$(awk '{print $1, $NF, length($0)}' "$f" 2>/dev/null) || { echo unreadable; continue; }
  [ -n "$r" ] || r="empty file"
  if [ "$r" != "$last" ]; then
    last=$r
    set -- $r
    if [ "$1" = "$2" ] && [ "$3" = "$SIZE" ]; then echo "value $1"; else echo "partial $r"; fi
    read -r now < "$s"; [ "$now" = "$sub" ] || { echo "sub changed to $now"; sub=$now; }
  fi
  read -r now < "$k"; [ "$now" = "$tok" ] || { echo "secret $now"; tok=$now; }
done`
	pod := shellPod("live", corev1.RestartPolicyAlways, script, "/etc/live/value", "/etc/tag", "/etc/live", "/etc/secret/token")
	pod.Spec.TerminationGracePeriodSeconds = ptrTo[int64](1)
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{{Name: "SIZE", Value: strconv.Itoa(size)}}
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "live", MountPath: "/etc/live", ReadOnly: true},
		{Name: "live", MountPath: "/etc/tag", SubPath: "tag", ReadOnly: true},
		{Name: "secret", MountPath: "/etc/secret", ReadOnly: true},
	}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "live", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "live"}}}},
		{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "live"}}},
	}
	create(t, admin, ns, pod)
	p := waitPod(t, admin, ns, "live", ready)
	logs := func() string { return runner.Logs(ns, "live") }
	awaitLog := func(line string, n int) time.Duration {
		t.Helper()
		began := time.Now()
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
			return strings.Count(logs(), line+"\n") >= n, nil
		})
		if err != nil {
			t.Fatalf("the Pod did not log %q (%d times) within 15s; logs:\n%s", line, n, tail(logs(), 20))
		}
		return time.Since(began)
	}
	awaitLog("value v001", 1)
	awaitLog("secret s1", 1)
	first := strings.SplitN(logs(), "\n", 2)[0]
	var tsDir string
	if _, err := fmt.Sscanf(first, "layout data=%s value=..data/value tag=..data/tag", &tsDir); err != nil || !strings.HasPrefix(tsDir, "..20") {
		t.Fatalf("volume layout as the Pod sees it: %q, want ..data -> ..<timestamp> and each key -> ..data/<key>", first)
	}

	// Update the ConfigMap, one version at a time.
	var took []string
	const versions = 8
	for n := 2; n <= versions; n++ {
		cm, err := cms.Get(ctx, "live", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data = version(n)
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		took = append(took, awaitLog(fmt.Sprintf("value v%03d", n), 1).Round(time.Millisecond).String())
	}
	t.Logf("updates reached the running Pod after %s", strings.Join(took, ", "))
	s, err := secrets.Get(ctx, "live", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data = map[string][]byte{"token": []byte("s2")}
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the Secret's update reached the running Pod after %s", awaitLog("secret s2", 1).Round(time.Millisecond))

	out := logs()
	if strings.Contains(out, "partial") {
		t.Errorf("the Pod read a partial file:\n%s", grepLines(out, "partial"))
	}
	if strings.Contains(out, "sub changed") {
		t.Errorf("the subPath mount changed while the container ran (the kubelet never updates one):\n%s", grepLines(out, "sub"))
	}
	if n := strings.Count(out, "unreadable\n"); n > 0 {
		t.Logf("%d reads found no file (a reader that resolved ..data just before the old version went)", n)
	}
	// On disk: one timestamped directory, the old ones are gone.
	volDir := filepath.Join(runner.Dir(), ns+"_live_"+string(p.UID), "volumes", "live")
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		m, _ := filepath.Glob(filepath.Join(volDir, "..20*"))
		return len(m) == 1, nil
	})
	if err != nil {
		m, _ := filepath.Glob(filepath.Join(volDir, "..*"))
		t.Errorf("%s holds %v, want ..data and one timestamped directory", volDir, m)
	}
	if b, err := os.ReadFile(filepath.Join(volDir, "tag")); err != nil || string(b) != fmt.Sprintf("v%03d", versions) {
		t.Errorf("%s/tag: %q (%v), want the last version", volDir, b, err)
	}

	// A restarted container sees the current version through its subPath.
	if err := runner.Kill(ns, "live"); err != nil {
		t.Fatal(err)
	}
	awaitLog(fmt.Sprintf("sub v%03d", versions), 1)
	if n := strings.Count(logs(), "sub v001\n"); n != 1 {
		t.Errorf("the first start logged \"sub v001\" %d times, want once", n)
	}

	if err := admin.CoreV1().Pods(ns).Delete(ctx, "live", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := admin.CoreV1().Pods(ns).Get(ctx, "live", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("pod not removed after deletion: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
