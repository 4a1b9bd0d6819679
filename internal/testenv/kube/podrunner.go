package kube

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// Image describes what a container image runs: the ENTRYPOINT, CMD and ENV
// of its config. Entrypoint[0] is a local executable.
type Image struct {
	Entrypoint []string
	Cmd        []string
	Env        []string // KEY=VALUE
}

// PodRunnerOptions configures StartPodRunner.
type PodRunnerOptions struct {
	// Node is the Node's name. Default "testenv-node".
	Node string
	// Images maps an image reference to what it runs. An unknown image leaves
	// the container Waiting with reason ErrImagePull. Required.
	Images func(image string) (Image, bool)
	// KubeconfigEnv, if set, is the environment variable that receives the
	// path of a kubeconfig built from the Pod's ServiceAccount token volume
	// (Pods without one get no such variable).
	KubeconfigEnv string
	// ProbeInterval is how often probes run (instead of periodSeconds).
	// Default 200ms.
	ProbeInterval time.Duration
	// MaxRestartBackoff caps the back-off between restarts of a crashing
	// container (a kubelet uses 5m). Default 10s.
	MaxRestartBackoff time.Duration
	// OnLog, if set, receives every output line of every container.
	OnLog func(namespace, pod, container string, line []byte)
}

// PodRunner is the test environment's kubelet.
//
// No kubelet can run here (no container runtime, no root cgroups), so Pods
// created by controllers would stay Pending. A PodRunner stands in for the
// kubelet of one Node and the scheduler in front of it, running every
// container as a plain local process of a binary chosen by image:
//
//   - It registers a Node (Ready, with capacity, a loopback InternalIP) and
//     renews its node Lease in kube-node-lease every few seconds, as a kubelet
//     does, so the node lifecycle controller never taints it.
//   - One informer watches all Pods. A Pod without spec.nodeName (and with the
//     default scheduler) is bound to the Node through the pods/binding
//     subresource: no kube-scheduler runs, and nodeSelector, affinity and
//     topology spread are not evaluated (there is one node anyway).
//   - Each Pod bound to the Node gets a worker goroutine. The worker builds the
//     container environment the way a kubelet does: service-link variables
//     (enableServiceLinks) and KUBERNETES_SERVICE_HOST/PORT, envFrom, env with
//     value, $(VAR) expansion, fieldRef (metadata.name/namespace/uid/labels/
//     annotations, spec.nodeName, spec.serviceAccountName, status.podIP,
//     status.hostIP, which are 127.0.0.1), resourceFieldRef, secretKeyRef and
//     configMapKeyRef. The process does not inherit the test's environment.
//   - Volumes are materialised in a per-Pod directory: secret, configMap,
//     downwardAPI, emptyDir and projected (secret, configMap, downwardAPI and
//     serviceAccountToken — a real TokenRequest for the Pod's ServiceAccount,
//     bound to the Pod). File modes follow defaultMode/mode; with an fsGroup
//     the files belong to that group and are group-readable, as the kubelet
//     does it.
//   - Secret, configMap, downwardAPI and projected volumes are written in the
//     kubelet's atomic layout and kept up to date while the Pod runs, as a
//     kubelet does: the files of one version are in a timestamped directory
//     "..2006_01_02_15_04_05.NNN", "..data" is a symlink to it, and each
//     top-level key is a symlink "key -> ..data/key". A change writes a new
//     timestamped directory, renames a new "..data" symlink over the old one
//     and removes the old directory, so a reader opens the old or the new
//     version, never a partial file (a reader that resolved "..data" just
//     before the old directory goes may get ENOENT once, as with a kubelet).
//     Informers on all ConfigMaps and Secrets tell the Pods that mount one
//     when it changes (within milliseconds, where a kubelet takes up to its
//     sync period plus cache delay; tests must poll for the change either
//     way), a change of the Pod's labels or annotations refreshes its
//     downwardAPI volumes, and every volume is re-read once a minute. Only
//     changed content is rewritten; an object that cannot be read (deleted,
//     forbidden) leaves the volume as it is, and an optional one that is
//     gone empties it. Projected tokens are minted once and kept.
//   - subPath mounts of those volumes are not updated, as in Kubernetes
//     (where the kubelet bind-mounts the file the subPath resolves to): at
//     every container start the runner hard-links what the subPath resolves
//     to then into <podDir>/volume-subpaths/<volume>/<container>/<index> and
//     the container sees that, so a running container keeps its version and
//     a restarted one sees the current one (kubernetes#89629). subPath mounts
//     of an emptyDir share the directory, as bind mounts do.
//   - A process cannot see a mount table of its own, so every argument and
//     environment value that names a path under a volumeMount's mountPath
//     (the whole value, or the part after "=") is rewritten to the volume's
//     directory: "--database-dsn-file=/etc/leasecron/db/dsn" becomes
//     "--database-dsn-file=<podDir>/volumes/dsn/dsn" (the longest mountPath
//     wins, so a mount nested in another maps to its own volume; a kubelet
//     would also create the mount point inside the outer volume, the runner
//     does not). Hard-coded paths inside the binary (the in-cluster
//     /var/run/secrets/...) cannot be rewritten.
//   - In-cluster config cannot work outside a Pod network, so when the Pod
//     has a ServiceAccount token volume the runner writes a kubeconfig for the
//     apiserver that uses that token file and the projected ca.crt, and sets
//     PodRunnerOptions.KubeconfigEnv (e.g. LEASECRON_KUBECONFIG) to its path.
//   - Pods have no network namespace of their own, so every containerPort is
//     mapped to a free loopback port: an argument or environment value that is
//     a listen address for a containerPort (":8080", "0.0.0.0:8080", also
//     after "=") is rewritten to 127.0.0.1:<port>, and the probes' named or
//     numbered ports are mapped the same way. The Pod's status.podIP is a
//     made-up 10.244.x.y address, because Endpoints refuse loopback
//     addresses; the downward API's status.podIP is 127.0.0.1, where the
//     process can actually listen. Service ClusterIPs do not route anywhere.
//   - When running as root, the process runs as the Pod's runAsUser/runAsGroup
//     with fsGroup and supplementalGroups as extra groups, so the chart's
//     non-root settings and file modes are exercised. readOnlyRootFilesystem,
//     seccomp and capabilities are not enforced (no container runtime).
//   - Status is reported with UpdateStatus: phase Running with the container
//     Running once the process started, the conditions Initialized,
//     PodReadyToStartContainers, ContainersReady and Ready (from the probes),
//     podIP/hostIP, container restart counts and last terminated states.
//     Probes (httpGet, tcpSocket; exec and grpc count as passing) are polled
//     every PodRunnerOptions.ProbeInterval instead of periodSeconds, so tests
//     need not wait 10s for readiness; a liveness or startup failure still
//     needs periodSeconds × failureThreshold of continuous failure before the
//     container is killed, as with a kubelet.
//   - A container that exits is restarted per restartPolicy (Always, or
//     OnFailure on a non-zero exit), the first time at once and then with a
//     doubling back-off (CrashLoopBackOff); with restartPolicy Never (helm test
//     hooks) the Pod ends Succeeded or Failed by exit code.
//   - Deletion (deletionTimestamp set) is handled like a kubelet: SIGTERM,
//     wait up to deletionGracePeriodSeconds, SIGKILL, then delete the Pod with
//     grace period 0 so the API object goes away.
//   - Kill simulates a crash: SIGKILL to the container process behind a Pod;
//     the runner records the container as terminated (exit 137) and restarts it
//     in the same Pod, as a kubelet would. Freeze and Thaw stop and continue
//     the container's process group (SIGSTOP, SIGCONT), as a paused container
//     or a long GC pause: the Pod stays Running meanwhile.
//   - Images map to local executables (PodRunnerOptions.Images): the image's
//     Entrypoint is a host path and is used as is; a Pod's command and args are
//     expanded and rewritten as above.
//
// Not emulated: init and ephemeral containers (a Pod with init containers
// stays Waiting with CreateContainerConfigError), lifecycle hooks, resource
// limits, hostPath and other volume types, token rotation (the projected token
// is minted once, valid for its expirationSeconds), and any network isolation.
//
// Every process gets its own process group and Pdeathsig SIGKILL (forked from
// the same locked thread as the control plane's processes), so it dies with
// the test binary. Stop (registered in t.Cleanup) stops every process, waits
// for every goroutine and removes the runner's directory. Each container's
// stdout and stderr are kept in a log file (Logs) and passed line by line to
// PodRunnerOptions.OnLog.
type PodRunner struct {
	cp     *ControlPlane
	client kubernetes.Interface
	opts   PodRunnerOptions
	dir    string
	logf   func(format string, args ...any)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	stopped bool
	nextIP  int
}

// StartPodRunner registers the Node and starts running the Pods bound to it
// (binding unscheduled Pods to it first). It is stopped in t.Cleanup; a
// failure to start fails the test.
func (c *ControlPlane) StartPodRunner(t testing.TB, opts PodRunnerOptions) *PodRunner {
	t.Helper()
	if opts.Images == nil {
		t.Fatal("kube: PodRunnerOptions.Images is required")
	}
	if opts.Node == "" {
		opts.Node = "testenv-node"
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 200 * time.Millisecond
	}
	if opts.MaxRestartBackoff <= 0 {
		opts.MaxRestartBackoff = 10 * time.Second
	}
	dir, err := os.MkdirTemp("", "leasecron-podrunner-")
	if err != nil {
		t.Fatalf("kube: %v", err)
	}
	// Processes may run as another user: let them traverse to their files.
	_ = os.Chmod(dir, 0o755)
	cfg := c.AdminConfig()
	cfg.UserAgent = "testenv-podrunner"
	r := &PodRunner{
		cp: c, client: kubernetes.NewForConfigOrDie(cfg), opts: opts, dir: dir,
		logf: t.Logf, workers: map[types.UID]*podWorker{},
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.Stop)

	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	if err := r.registerNode(ctx); err != nil {
		t.Fatalf("kube: registering node %s: %v", opts.Node, err)
	}
	r.wg.Go(r.heartbeat)

	factory := informers.NewSharedInformerFactory(r.client, 0)
	inf := factory.Core().V1().Pods().Informer()
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.observe(obj) },
		UpdateFunc: func(_, obj any) { r.observe(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				r.gone(p)
			}
		},
	})
	if err != nil {
		t.Fatalf("kube: %v", err)
	}
	// Mounted ConfigMaps and Secrets are refreshed in running Pods: these
	// informers tell the Pods' workers when one changes.
	cms := factory.Core().V1().ConfigMaps().Informer()
	secrets := factory.Core().V1().Secrets().Informer()
	if err := r.watchObjects(cms, kindConfigMap); err != nil {
		t.Fatalf("kube: %v", err)
	}
	if err := r.watchObjects(secrets, kindSecret); err != nil {
		t.Fatalf("kube: %v", err)
	}
	factory.Start(r.ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, cms.HasSynced, secrets.HasSynced) {
		t.Fatalf("kube: pod, configmap and secret informers did not sync")
	}
	r.wg.Go(func() { <-r.ctx.Done(); factory.Shutdown() })
	return r
}

// Dir is the runner's directory (per-Pod volumes, kubeconfigs and logs); Stop removes it.
func (r *PodRunner) Dir() string { return r.dir }

// errImage reports an image the runner does not know.
var errImage = errors.New("image unknown to the pod runner")

// Node is the name of the Node the runner registered.
func (r *PodRunner) Node() string { return r.opts.Node }

// Stop stops every container (SIGTERM, then SIGKILL after the Pod's grace
// period, at most 10s) and the runner, and removes its directory. Pods stay
// in the API as they are. Safe to call twice.
func (r *PodRunner) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	ws := make([]*podWorker, 0, len(r.workers))
	for _, w := range r.workers {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.killAll(10 * time.Second) })
	}
	wg.Wait()
	r.cancel()
	r.wg.Wait()
	_ = os.RemoveAll(r.dir)
}

// Kill sends SIGKILL to the processes of every running container of the
// Pod, as if they crashed; the runner restarts them per restartPolicy. It
// returns an error if the Pod has no running container here.
func (r *PodRunner) Kill(namespace, name string) error {
	return r.signalPod(namespace, name, syscall.SIGKILL)
}

// Freeze stops (SIGSTOP) the process group of every running container of
// the Pod, as a paused container, a long GC pause or a stalled VM would:
// the processes keep their state, sockets and locks and do nothing until
// Thaw. Only each container's own process group is stopped: a program it
// started in a group of its own (a leasecron command job) runs on. The
// Pod stays Running and nothing restarts it; its probes time out
// meanwhile, so a freeze longer than the liveness probe's
// periodSeconds × failureThreshold gets it killed, as a kubelet would. It
// returns an error if the Pod has no running container here.
func (r *PodRunner) Freeze(namespace, name string) error {
	return r.signalPod(namespace, name, syscall.SIGSTOP)
}

// Thaw continues (SIGCONT) the process groups Freeze stopped.
func (r *PodRunner) Thaw(namespace, name string) error {
	return r.signalPod(namespace, name, syscall.SIGCONT)
}

// signalPod sends sig to the process group of every running container of
// the Pod.
func (r *PodRunner) signalPod(namespace, name string, sig syscall.Signal) error {
	w := r.workerFor(namespace, name)
	if w == nil {
		return fmt.Errorf("kube: pod %s/%s is not running on node %s", namespace, name, r.opts.Node)
	}
	n := 0
	for _, c := range w.containers {
		if c.signal(sig) {
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("kube: pod %s/%s has no running container", namespace, name)
	}
	return nil
}

// Logs returns the output of the Pod's containers so far (all containers,
// all restarts), or "" if the runner never ran it.
func (r *PodRunner) Logs(namespace, name string) string {
	r.mu.Lock()
	var paths []string
	for _, w := range r.workers {
		if w.namespace == namespace && w.name == name {
			for _, c := range w.containers {
				paths = append(paths, c.logPath)
			}
		}
	}
	r.mu.Unlock()
	var b strings.Builder
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	return b.String()
}

// LogTails returns the last n lines of the output of every Pod the runner
// ran, for failure reports.
func (r *PodRunner) LogTails(n int) string {
	r.mu.Lock()
	var b strings.Builder
	for _, w := range r.workers {
		for _, c := range w.containers {
			fmt.Fprintf(&b, "--- %s/%s[%s] (%s):\n%s\n", w.namespace, w.name, c.spec.Name, c.logPath, tailFile(c.logPath, n))
		}
	}
	r.mu.Unlock()
	return b.String()
}

func (r *PodRunner) workerFor(namespace, name string) *podWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		if w.namespace == namespace && w.name == name && !w.finished() {
			return w
		}
	}
	return nil
}

// ---- node ----

func (r *PodRunner) registerNode(ctx context.Context) error {
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: r.opts.Node, Labels: map[string]string{
			"kubernetes.io/hostname": r.opts.Node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		}},
	}
	created, err := r.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = r.client.CoreV1().Nodes().Get(ctx, r.opts.Node, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: r.opts.Node},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "testenv pod runner is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "testenv://podrunner"},
	}
	_, err = r.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node Lease (and the Ready condition) like a kubelet.
func (r *PodRunner) heartbeat() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		r.renewNodeLease(ctx)
		cancel()
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *PodRunner) renewNodeLease(ctx context.Context) {
	leases := r.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, r.opts.Node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, _ = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: r.opts.Node},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &r.opts.Node,
				LeaseDurationSeconds: ptr[int32](40), RenewTime: &now},
		}, metav1.CreateOptions{})
		return
	}
	if err != nil {
		return
	}
	l.Spec.RenewTime = &now
	_, _ = leases.Update(ctx, l, metav1.UpdateOptions{})
}

// ---- pods ----

func (r *PodRunner) observe(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	switch {
	case pod.Spec.NodeName == "":
		if pod.DeletionTimestamp == nil && (pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName) {
			r.bind(pod)
		}
	case pod.Spec.NodeName == r.opts.Node:
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			return
		}
		w := r.workers[pod.UID]
		if w == nil {
			w = newPodWorker(r, pod)
			r.nextIP++
			w.ip = fmt.Sprintf("10.244.%d.%d", r.nextIP/250, r.nextIP%250+1)
			r.workers[pod.UID] = w
			r.wg.Go(w.run)
		}
		r.mu.Unlock()
		w.update(pod)
	}
}

func (r *PodRunner) gone(pod *corev1.Pod) {
	r.mu.Lock()
	w := r.workers[pod.UID]
	r.mu.Unlock()
	if w != nil {
		w.update(pod) // marks it deleted if it was not already
		w.markGone()
	}
}

func (r *PodRunner) bind(pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	err := r.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: r.opts.Node},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && r.ctx.Err() == nil {
		r.logf("kube: podrunner: binding %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

// podWorker runs one Pod.
type podWorker struct {
	r               *PodRunner
	uid             types.UID
	namespace, name string
	dir             string
	ip              string // status.podIP: a made-up address (see PodRunner)
	containers      []*container

	// Atomic volumes (see syncVolumes): the objects they read, whether one
	// shows the Pod's metadata, a signal that one changed, the payload last
	// written per volume and the tokens minted per projected path (reused on
	// refresh: tokens are not rotated). payloads and tokens belong to prepare
	// and then to syncVolumes.
	refs           map[objRef]bool
	downward       bool
	volumesChanged chan struct{}
	payloads       map[string]map[string]fileData
	tokens         map[string]string

	mu      sync.Mutex
	pod     *corev1.Pod // latest observed
	changed chan struct{}
	gone    bool
	done    chan struct{}
	started time.Time
}

func newPodWorker(r *PodRunner, pod *corev1.Pod) *podWorker {
	w := &podWorker{r: r, uid: pod.UID, namespace: pod.Namespace, name: pod.Name,
		dir: filepath.Join(r.dir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)), pod: pod,
		changed: make(chan struct{}, 1), done: make(chan struct{}),
		volumesChanged: make(chan struct{}, 1), payloads: map[string]map[string]fileData{}, tokens: map[string]string{}}
	w.refs, w.downward = volumeRefs(pod)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		w.containers = append(w.containers, &container{w: w, spec: c,
			logPath: filepath.Join(w.dir, "logs", c.Name+".log")})
	}
	return w
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	old := w.pod
	w.pod = pod
	w.mu.Unlock()
	if w.downward && metadataChanged(old, pod) {
		w.pokeVolumes()
	}
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *podWorker) markGone() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *podWorker) latest() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.gone
}

func (w *podWorker) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *podWorker) logf(format string, args ...any) {
	if w.r.ctx.Err() == nil {
		w.r.logf("kube: podrunner: %s/%s: %s", w.namespace, w.name, fmt.Sprintf(format, args...))
	}
}

// run is the Pod's lifecycle: prepare, run containers until deletion, then
// terminate them and remove the Pod object.
func (w *podWorker) run() {
	defer close(w.done)
	if err := os.MkdirAll(filepath.Join(w.dir, "logs"), 0o755); err != nil {
		w.logf("%v", err)
		return
	}
	_ = os.Chmod(w.dir, 0o755)
	w.started = time.Now()
	ctx := w.r.ctx

	pod, _ := w.latest()
	if pod.DeletionTimestamp == nil && !isTerminal(pod) {
		var err error
		backoff := 200 * time.Millisecond
		for {
			err = w.prepare(ctx)
			if err == nil {
				break
			}
			reason := "CreateContainerConfigError"
			if errors.Is(err, errImage) {
				reason = "ErrImagePull"
			}
			w.setWaiting(reason, err.Error())
			w.pushStatus(ctx)
			if !w.waitChange(ctx, backoff) {
				break
			}
			backoff = min(2*backoff, 5*time.Second)
			if p, gone := w.latest(); gone || p.DeletionTimestamp != nil {
				break
			}
		}
		if err == nil {
			for _, c := range w.containers {
				w.r.wg.Go(func() { c.loop(ctx) })
			}
			w.r.wg.Go(func() { w.syncVolumes(ctx) })
		}
	}

	// Report status whenever something changes, until the Pod is deleted.
	for {
		pod, gone := w.latest()
		if gone {
			w.killAll(0)
			return
		}
		if pod.DeletionTimestamp != nil {
			grace := 30 * time.Second
			if pod.DeletionGracePeriodSeconds != nil {
				grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
			}
			w.killAll(grace)
			w.pushStatus(ctx)
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := w.r.client.CoreV1().Pods(w.namespace).Delete(dctx, w.name, metav1.DeleteOptions{
				GracePeriodSeconds: ptr[int64](0), Preconditions: &metav1.Preconditions{UID: &w.uid}})
			cancel()
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				w.logf("finalising deletion: %v", err)
			}
			return
		}
		w.pushStatus(ctx)
		if !w.waitChange(ctx, time.Minute) {
			w.killAll(0)
			return
		}
	}
}

// waitChange waits for a Pod or container change or d; false when the runner stops.
func (w *podWorker) waitChange(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-w.changed:
	case <-t.C:
	}
	return true
}

func (w *podWorker) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *podWorker) killAll(grace time.Duration) {
	var wg sync.WaitGroup
	for _, c := range w.containers {
		wg.Go(func() { c.terminate(grace) })
	}
	wg.Wait()
}

func (w *podWorker) setWaiting(reason, msg string) {
	for _, c := range w.containers {
		c.mu.Lock()
		if c.proc == nil {
			c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		}
		c.mu.Unlock()
	}
}

func isTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// ---- preparing a Pod: volumes, ports, env, command ----

type mount struct{ path, dir string }

// subPathDir is where a container keeps its subPath mount (index: of the
// mount in volumeMounts) of an atomic volume; see subPath.
func (w *podWorker) subPathDir(volume, container string, index int) string {
	return filepath.Join(w.dir, "volume-subpaths", volume, container, strconv.Itoa(index))
}

func (w *podWorker) prepare(ctx context.Context) error {
	pod, _ := w.latest()
	if len(pod.Spec.InitContainers) > 0 {
		return errors.New("init containers are not supported by the pod runner")
	}
	volDirs := map[string]string{}
	atomic := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		if _, err := w.materialise(ctx, pod, v, dir); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
		volDirs[v.Name] = dir
		atomic[v.Name] = isAtomic(&v)
	}
	var kubeconfig string
	for _, c := range w.containers {
		var mounts []mount
		c.subPaths = nil
		for i, m := range c.spec.VolumeMounts {
			dir, ok := volDirs[m.Name]
			if !ok {
				return fmt.Errorf("container %q mounts unknown volume %q", c.spec.Name, m.Name)
			}
			if m.SubPath != "" {
				dir = filepath.Join(dir, m.SubPath)
				if atomic[m.Name] {
					// Fixed at each container start, as a bind mount is.
					sp := subPath{src: dir, dst: w.subPathDir(m.Name, c.spec.Name, i)}
					c.subPaths = append(c.subPaths, sp)
					dir = sp.dst
				}
			}
			mounts = append(mounts, mount{path: filepath.Clean(m.MountPath), dir: dir})
			if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" && w.r.opts.KubeconfigEnv != "" {
				path := filepath.Join(w.dir, "kubeconfig")
				if err := w.writeKubeconfig(pod, dir, path); err != nil {
					return err
				}
				kubeconfig = path
			}
		}
		sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].path) > len(mounts[j].path) })
		c.mounts = mounts

		c.ports = map[int32]int{}
		for _, p := range c.spec.Ports {
			ports, err := freePorts(1)
			if err != nil {
				return err
			}
			c.ports[p.ContainerPort] = ports[0]
		}
		env, err := w.containerEnv(ctx, pod, c.spec)
		if err != nil {
			return err
		}
		for i, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			env[i] = k + "=" + c.rewrite(v)
		}
		if kubeconfig != "" {
			env = setEnv(env, w.r.opts.KubeconfigEnv, kubeconfig)
		}
		c.env = env
	}
	return nil
}

func (w *podWorker) writeKubeconfig(pod *corev1.Pod, saDir, path string) error {
	cfg := w.r.cp.AdminConfig()
	cfg.BearerToken = ""
	cfg.BearerTokenFile = filepath.Join(saDir, "token")
	cfg.CAData = nil
	cfg.CAFile = filepath.Join(saDir, "ca.crt")
	if err := clientcmd.WriteToFile(*w.r.cp.kubeconfig(cfg), path); err != nil {
		return err
	}
	return w.chown(pod, path, 0o440)
}

// chown gives path to root:fsGroup (group-readable) when the Pod has an
// fsGroup, as the kubelet does with volume files; mode is kept otherwise.
func (w *podWorker) chown(pod *corev1.Pod, path string, mode os.FileMode) error {
	sc := pod.Spec.SecurityContext
	if sc != nil && sc.FSGroup != nil && os.Geteuid() == 0 {
		if err := os.Chown(path, 0, int(*sc.FSGroup)); err != nil {
			return err
		}
		mode |= 0o440
	}
	return os.Chmod(path, mode)
}

// materialise writes the volume's files to dir: an emptyDir once, the
// atomic kinds in the kubelet's layout (writeAtomic), rewritten only when
// their content changed, which it reports.
func (w *podWorker) materialise(ctx context.Context, pod *corev1.Pod, v corev1.Volume, dir string) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	files := map[string]fileData{}
	switch {
	case v.EmptyDir != nil:
		return false, os.Chmod(dir, 0o1777)
	case v.Secret != nil:
		if err := w.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, modeOr(v.Secret.DefaultMode, 0o644), files); err != nil {
			return false, err
		}
	case v.ConfigMap != nil:
		if err := w.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, modeOr(v.ConfigMap.DefaultMode, 0o644), files); err != nil {
			return false, err
		}
	case v.DownwardAPI != nil:
		if err := w.downwardFiles(pod, v.DownwardAPI.Items, modeOr(v.DownwardAPI.DefaultMode, 0o644), files); err != nil {
			return false, err
		}
	case v.Projected != nil:
		def := modeOr(v.Projected.DefaultMode, 0o644)
		for _, s := range v.Projected.Sources {
			var err error
			switch {
			case s.Secret != nil:
				err = w.secretFiles(ctx, pod.Namespace, s.Secret.Name, s.Secret.Items, s.Secret.Optional, def, files)
			case s.ConfigMap != nil:
				err = w.configMapFiles(ctx, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, def, files)
			case s.DownwardAPI != nil:
				err = w.downwardFiles(pod, s.DownwardAPI.Items, def, files)
			case s.ServiceAccountToken != nil:
				key := v.Name + "/" + s.ServiceAccountToken.Path
				tok, ok := w.tokens[key]
				if !ok {
					if tok, err = w.token(ctx, pod, s.ServiceAccountToken); err == nil {
						w.tokens[key] = tok
					}
				}
				files[s.ServiceAccountToken.Path] = fileData{[]byte(tok), def}
			default:
				err = errors.New("unsupported projected volume source")
			}
			if err != nil {
				return false, err
			}
		}
	default:
		return false, errors.New("unsupported volume type (the pod runner supports secret, configMap, downwardAPI, projected and emptyDir)")
	}
	return w.writeAtomic(pod, v.Name, dir, files)
}

type fileData struct {
	data []byte
	mode os.FileMode
}

func modeOr(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m)
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath, def os.FileMode, optional bool, what string, files map[string]fileData) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = fileData{v, def}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		files[it.Path] = fileData{v, modeOr(it.Mode, def)}
	}
	return nil
}

func (w *podWorker) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode, files map[string]fileData) error {
	s, err := w.r.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return keyFiles(s.Data, items, def, optional != nil && *optional, "secret "+name, files)
}

func (w *podWorker) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode, files map[string]fileData) error {
	cm, err := w.r.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configmap %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	maps := cm.BinaryData
	for k, v := range maps {
		data[k] = v
	}
	return keyFiles(data, items, def, optional != nil && *optional, "configmap "+name, files)
}

func (w *podWorker) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def os.FileMode, files map[string]fileData) error {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := containerByName(pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return fmt.Errorf("downwardAPI %s: no container %q", it.Path, it.ResourceFieldRef.ContainerName)
			}
			v, err = resourceValue(c, it.ResourceFieldRef)
		}
		if err != nil {
			return err
		}
		files[it.Path] = fileData{[]byte(v), modeOr(it.Mode, def)}
	}
	return nil
}

func containerByName(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if name == "" || pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// token mints a ServiceAccount token bound to the Pod (TokenRequest), as the
// kubelet does for a projected serviceAccountToken source.
func (w *podWorker) token(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	exp := int64(3600)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	var aud []string
	if src.Audience != "" {
		aud = []string{src.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := w.r.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences: aud, ExpirationSeconds: &exp,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for serviceaccount %q: %w", sa, err)
	}
	return tr.Status.Token, nil
}

var fieldKeyRE = regexp.MustCompile(`^metadata\.(labels|annotations)\['(.+)'\]$`)

func fieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	case "metadata.labels", "metadata.annotations":
		m := pod.Labels
		if path == "metadata.annotations" {
			m = pod.Annotations
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%q\n", k, m[k])
		}
		return b.String(), nil
	}
	if m := fieldKeyRE.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		// No limit: the node's allocatable, as a kubelet reports it.
		switch name {
		case "cpu":
			q = resource.MustParse("8")
		default:
			q = resource.MustParse("32Gi")
		}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	if name == "cpu" {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(div.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(div.Value()))), 10), nil
}

// containerEnv builds the environment a kubelet gives the container: the
// image's ENV, service links, envFrom, then env with $(VAR) expansion.
func (w *podWorker) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	img, ok := w.r.opts.Images(c.Image)
	if !ok {
		return nil, fmt.Errorf("%w: %q", errImage, c.Image)
	}
	env := append([]string(nil), img.Env...)
	env = setEnv(env, "HOSTNAME", pod.Name)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(w.r.cp.host, "https://"))
	svcEnv := map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		svcs, err := w.r.client.CoreV1().Services(pod.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, s := range svcs.Items {
			if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone || s.Name == "kubernetes" {
				continue
			}
			for k, v := range serviceLinkEnv(&s) {
				svcEnv[k] = v
			}
		}
	}
	keys := make([]string, 0, len(svcEnv))
	for k := range svcEnv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = setEnv(env, k, svcEnv[k])
	}

	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := w.r.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, err
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := w.r.client.CoreV1().Secrets(pod.Namespace).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && from.SecretRef.Optional != nil && *from.SecretRef.Optional {
					continue
				}
				return nil, err
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			env = setEnv(env, from.Prefix+k, v)
		}
	}

	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom == nil {
			v = expand(v, env)
		} else {
			var err error
			switch f := e.ValueFrom; {
			case f.FieldRef != nil:
				v, err = fieldValue(pod, f.FieldRef.FieldPath)
			case f.ResourceFieldRef != nil:
				rc := c
				if f.ResourceFieldRef.ContainerName != "" {
					rc = containerByName(pod, f.ResourceFieldRef.ContainerName)
				}
				v, err = resourceValue(rc, f.ResourceFieldRef)
			case f.SecretKeyRef != nil:
				var s *corev1.Secret
				s, err = w.r.client.CoreV1().Secrets(pod.Namespace).Get(ctx, f.SecretKeyRef.Name, metav1.GetOptions{})
				if err == nil {
					b, ok := s.Data[f.SecretKeyRef.Key]
					if !ok && (f.SecretKeyRef.Optional == nil || !*f.SecretKeyRef.Optional) {
						err = fmt.Errorf("secret %q has no key %q", f.SecretKeyRef.Name, f.SecretKeyRef.Key)
					}
					v = string(b)
				} else if apierrors.IsNotFound(err) && f.SecretKeyRef.Optional != nil && *f.SecretKeyRef.Optional {
					continue
				}
			case f.ConfigMapKeyRef != nil:
				var cm *corev1.ConfigMap
				cm, err = w.r.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, f.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err == nil {
					s, ok := cm.Data[f.ConfigMapKeyRef.Key]
					if !ok && (f.ConfigMapKeyRef.Optional == nil || !*f.ConfigMapKeyRef.Optional) {
						err = fmt.Errorf("configmap %q has no key %q", f.ConfigMapKeyRef.Name, f.ConfigMapKeyRef.Key)
					}
					v = s
				} else if apierrors.IsNotFound(err) && f.ConfigMapKeyRef.Optional != nil && *f.ConfigMapKeyRef.Optional {
					continue
				}
			default:
				err = fmt.Errorf("env %s: unsupported valueFrom", e.Name)
			}
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		}
		env = setEnv(env, e.Name, v)
	}
	return env, nil
}

// serviceLinkEnv is the Docker-links style environment of a Service.
func serviceLinkEnv(s *corev1.Service) map[string]string {
	name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	env := map[string]string{name + "_SERVICE_HOST": s.Spec.ClusterIP}
	for i, p := range s.Spec.Ports {
		port := strconv.Itoa(int(p.Port))
		proto := strings.ToLower(string(p.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		if i == 0 {
			env[name+"_SERVICE_PORT"] = port
			env[name+"_PORT"] = fmt.Sprintf("%s://%s:%s", proto, s.Spec.ClusterIP, port)
		}
		if p.Name != "" {
			env[name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))] = port
		}
		prefix := fmt.Sprintf("%s_PORT_%s_%s", name, port, strings.ToUpper(proto))
		env[prefix] = fmt.Sprintf("%s://%s:%s", proto, s.Spec.ClusterIP, port)
		env[prefix+"_PROTO"] = proto
		env[prefix+"_PORT"] = port
		env[prefix+"_ADDR"] = s.Spec.ClusterIP
	}
	return env
}

func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

func lookupEnv(env []string, k string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], k+"="); ok {
			return v, true
		}
	}
	return "", false
}

// expand does the kubelet's $(VAR) expansion: $(VAR) of a defined variable is
// replaced, $$ is an escaped $, anything else stays as written.
func expand(s string, env []string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte(s[i])
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookupEnv(env, name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// ---- containers ----

type container struct {
	w       *podWorker
	spec    *corev1.Container
	logPath string
	mounts  []mount
	// subPaths are the subPath mounts of atomic volumes, fixed at each start.
	subPaths []subPath
	ports    map[int32]int // containerPort -> loopback port
	env      []string

	mu           sync.Mutex
	proc         *exec.Cmd
	procDone     chan struct{}
	startedAt    time.Time
	waiting      *corev1.ContainerStateWaiting
	terminated   *corev1.ContainerStateTerminated // current state, when not running
	last, prev   *corev1.ContainerStateTerminated // the last two terminations
	restarts     int32
	ready        bool
	startupOK    bool
	stopping     bool // the pod is being deleted: no more restarts
	killedByUser bool
}

// rewrite maps a value naming a mount path or a containerPort listen address
// to the runner's directory or loopback port.
func (c *container) rewrite(v string) string {
	head, val := "", v
	if i := strings.IndexByte(v, '='); i >= 0 && strings.HasPrefix(v, "-") {
		head, val = v[:i+1], v[i+1:]
	}
	for _, m := range c.mounts {
		if val == m.path || strings.HasPrefix(val, m.path+"/") {
			return head + m.dir + val[len(m.path):]
		}
	}
	if host, port, err := net.SplitHostPort(val); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
		if p, err := strconv.Atoi(port); err == nil {
			if lp, ok := c.ports[int32(p)]; ok {
				return head + net.JoinHostPort("127.0.0.1", strconv.Itoa(lp))
			}
		}
	}
	return v
}

func (c *container) command() ([]string, error) {
	img, ok := c.w.r.opts.Images(c.spec.Image)
	if !ok {
		return nil, fmt.Errorf("image %q is unknown to the pod runner", c.spec.Image)
	}
	cmd := img.Entrypoint
	args := img.Cmd
	if len(c.spec.Command) > 0 {
		cmd, args = c.spec.Command, nil
	}
	if len(c.spec.Args) > 0 {
		args = c.spec.Args
	}
	// The image's entrypoint is a path on this host: only what the Pod
	// spec says is rewritten.
	var argv []string
	for i, a := range append(append([]string(nil), cmd...), args...) {
		if i < len(img.Entrypoint) && len(c.spec.Command) == 0 {
			argv = append(argv, a)
			continue
		}
		argv = append(argv, c.rewrite(expand(a, c.env)))
	}
	if len(argv) == 0 {
		return nil, errors.New("no command")
	}
	return argv, nil
}

// loop runs the container, restarting it per restartPolicy, until the Pod
// is deleted or the runner stops.
func (c *container) loop(ctx context.Context) {
	pod, _ := c.w.latest()
	policy := pod.Spec.RestartPolicy
	backoff := time.Duration(0)
	for {
		c.mu.Lock()
		stop := c.stopping
		c.mu.Unlock()
		if stop || ctx.Err() != nil {
			return
		}
		began := time.Now()
		exitCode, err := c.runOnce(ctx)
		if err != nil {
			c.w.logf("container %s: %v", c.spec.Name, err)
			c.mu.Lock()
			c.waiting = &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}
			c.mu.Unlock()
			c.w.poke()
		}
		c.mu.Lock()
		stop = c.stopping
		c.mu.Unlock()
		if stop || ctx.Err() != nil {
			return
		}
		switch {
		case policy == corev1.RestartPolicyNever,
			policy == corev1.RestartPolicyOnFailure && exitCode == 0 && err == nil:
			return
		}
		// CrashLoopBackOff: the first restart at once, then doubling.
		if time.Since(began) > 10*time.Minute {
			backoff = 0
		}
		if backoff > 0 {
			c.mu.Lock()
			c.waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container", backoff)}
			c.mu.Unlock()
			c.w.poke()
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		backoff = min(max(2*backoff, time.Second), c.w.r.opts.MaxRestartBackoff)
		c.mu.Lock()
		c.restarts++
		c.mu.Unlock()
	}
}

// runOnce starts the process and returns its exit code once it has exited.
func (c *container) runOnce(ctx context.Context) (int, error) {
	argv, err := c.command()
	if err != nil {
		return -1, err
	}
	for _, sp := range c.subPaths {
		if err := sp.refresh(); err != nil {
			return -1, err
		}
	}
	pod, _ := c.w.latest()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return -1, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return -1, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = c.env
	cmd.Dir = "/"
	if c.spec.WorkingDir != "" {
		cmd.Dir = c.rewrite(c.spec.WorkingDir)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: credential(pod, c.spec)}
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		pr.Close()
		pw.Close()
		logf.Close()
		return -1, nil
	}
	err = spawn(cmd)
	pw.Close()
	if err != nil {
		c.mu.Unlock()
		pr.Close()
		logf.Close()
		return -1, err
	}
	done := make(chan struct{})
	c.proc, c.procDone = cmd, done
	c.startedAt = time.Now()
	c.waiting, c.terminated, c.ready, c.startupOK = nil, nil, false, c.spec.StartupProbe == nil
	c.killedByUser = false
	c.mu.Unlock()
	c.w.poke()

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logf.Write(append(line, '\n'))
			if f := c.w.r.opts.OnLog; f != nil {
				f(c.w.namespace, c.w.name, c.spec.Name, append([]byte(nil), line...))
			}
		}
		_, _ = io.Copy(logf, pr)
	}()
	probeCtx, stopProbes := context.WithCancel(ctx)
	probesDone := make(chan struct{})
	go func() { defer close(probesDone); c.probe(probeCtx, done) }()

	werr := cmd.Wait()
	stopProbes()
	<-probesDone
	<-copied
	pr.Close()
	logf.Close()
	code := cmd.ProcessState.ExitCode()
	reason := "Completed"
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if code != 0 {
		reason = "Error"
	}
	_ = werr
	c.mu.Lock()
	term := &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason,
		StartedAt: metav1.NewTime(c.startedAt), FinishedAt: metav1.Now(),
		ContainerID: fmt.Sprintf("testenv://%d", cmd.Process.Pid)}
	c.terminated, c.last, c.prev = term, term, c.last
	c.proc = nil
	c.ready = false
	close(done)
	c.mu.Unlock()
	c.w.poke()
	return code, nil
}

// credential runs the process as the Pod's user when the runner is root.
func credential(pod *corev1.Pod, c *corev1.Container) *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	var uid, gid *int64
	var groups []uint32
	if sc := pod.Spec.SecurityContext; sc != nil {
		uid, gid = sc.RunAsUser, sc.RunAsGroup
		if sc.FSGroup != nil {
			groups = append(groups, uint32(*sc.FSGroup))
		}
		for _, g := range sc.SupplementalGroups {
			groups = append(groups, uint32(g))
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	if uid == nil {
		return nil
	}
	cr := &syscall.Credential{Uid: uint32(*uid), Gid: uint32(*uid), Groups: groups}
	if gid != nil {
		cr.Gid = uint32(*gid)
	}
	return cr
}

// signal sends sig to the running process group; false if none runs.
func (c *container) signal(sig syscall.Signal) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return false
	}
	if sig == syscall.SIGKILL {
		c.killedByUser = true
	}
	return syscall.Kill(-c.proc.Process.Pid, sig) == nil
}

// terminate stops the container for good: SIGTERM, up to grace, SIGKILL.
func (c *container) terminate(grace time.Duration) {
	c.mu.Lock()
	c.stopping = true
	p, done := c.proc, c.procDone
	c.mu.Unlock()
	if p == nil {
		return
	}
	if grace > 0 {
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		// A frozen container (Freeze) handles SIGTERM only once continued.
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGCONT)
		t := time.NewTimer(grace)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
	_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
	<-done
}

// probe runs the container's probes every ProbeInterval while the process
// runs, updating ready/startupOK and killing the process when the startup or
// liveness probe has failed for periodSeconds × failureThreshold.
func (c *container) probe(ctx context.Context, exited <-chan struct{}) {
	interval := c.w.r.opts.ProbeInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	var startFail, liveFail time.Time
	readyFails := 0
	began := time.Now()
	for {
		c.mu.Lock()
		started := c.startupOK
		ready := c.ready
		c.mu.Unlock()
		switch {
		case !started:
			p := c.spec.StartupProbe
			if time.Since(began) >= time.Duration(p.InitialDelaySeconds)*time.Second {
				if c.check(ctx, client, p) {
					c.set(func() { c.startupOK = true })
				} else if failedFor(&startFail, p) {
					c.w.logf("container %s: startup probe failed for %ds: killing it", c.spec.Name, threshold(p))
					c.signal(syscall.SIGKILL)
				}
			}
		default:
			if p := c.spec.LivenessProbe; p != nil {
				if c.check(ctx, client, p) {
					liveFail = time.Time{}
				} else if failedFor(&liveFail, p) {
					c.w.logf("container %s: liveness probe failed for %ds: killing it", c.spec.Name, threshold(p))
					c.signal(syscall.SIGKILL)
				}
			}
			p := c.spec.ReadinessProbe
			ok := p == nil || c.check(ctx, client, p)
			if ok {
				readyFails = 0
				if !ready {
					c.set(func() { c.ready = true })
				}
			} else {
				readyFails++
				if ready && readyFails >= int(max(p.FailureThreshold, 1)) {
					c.set(func() { c.ready = false })
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-exited:
			return
		case <-t.C:
		}
	}
}

func threshold(p *corev1.Probe) int32 { return max(p.PeriodSeconds, 1) * max(p.FailureThreshold, 1) }

// failedFor records the first failure in *since and reports whether the probe
// has failed continuously for periodSeconds × failureThreshold.
func failedFor(since *time.Time, p *corev1.Probe) bool {
	if since.IsZero() {
		*since = time.Now()
	}
	return time.Since(*since) >= time.Duration(threshold(p))*time.Second
}

func (c *container) set(f func()) {
	c.mu.Lock()
	f()
	c.mu.Unlock()
	c.w.poke()
}

func (c *container) port(p intstr.IntOrString) (int, bool) {
	n := int32(p.IntValue())
	if p.Type == intstr.String {
		n = 0
		for _, cp := range c.spec.Ports {
			if cp.Name == p.StrVal {
				n = cp.ContainerPort
			}
		}
	}
	lp, ok := c.ports[n]
	return lp, ok
}

func (c *container) check(ctx context.Context, client *http.Client, p *corev1.Probe) bool {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		port, ok := c.port(p.HTTPGet.Port)
		if !ok {
			return false
		}
		scheme := strings.ToLower(string(p.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, port, p.HTTPGet.Path), nil)
		if err != nil {
			return false
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case p.TCPSocket != nil:
		port, ok := c.port(p.TCPSocket.Port)
		if !ok {
			return false
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return true // exec and grpc probes are not run: they pass
}

func (c *container) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	img := c.spec.Image
	st := corev1.ContainerStatus{Name: c.spec.Name, Image: img, ImageID: "testenv://" + img,
		RestartCount: c.restarts, Ready: c.ready && c.proc != nil}
	switch {
	case c.proc != nil:
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
		st.ContainerID = fmt.Sprintf("testenv://%d", c.proc.Process.Pid)
		st.Started = ptr(c.startupOK)
		st.LastTerminationState.Terminated = c.last
	case c.waiting != nil:
		st.State.Waiting = c.waiting
		st.Started = ptr(false)
		st.LastTerminationState.Terminated = c.last
	case c.terminated != nil:
		st.State.Terminated = c.terminated
		st.ContainerID = c.terminated.ContainerID
		st.LastTerminationState.Terminated = c.prev
		st.Started = ptr(false)
	default:
		st.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		st.Started = ptr(false)
	}
	return st
}

// ---- status ----

func (w *podWorker) pushStatus(ctx context.Context) {
	var statuses []corev1.ContainerStatus
	allReady, anyRunning, allTerminated, anyFailed := true, false, true, false
	for _, c := range w.containers {
		st := c.status()
		statuses = append(statuses, st)
		allReady = allReady && st.Ready
		anyRunning = anyRunning || st.State.Running != nil
		if st.State.Terminated == nil {
			allTerminated = false
		} else if st.State.Terminated.ExitCode != 0 {
			anyFailed = true
		}
	}
	first := true
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var pod *corev1.Pod
		if p, _ := w.latest(); first && p != nil {
			pod = p.DeepCopy()
		} else {
			var err error
			if pod, err = w.r.client.CoreV1().Pods(w.namespace).Get(ctx, w.name, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		first = false
		if pod.UID != w.uid {
			return nil
		}
		old := pod.Status.DeepCopy()
		s := &pod.Status
		pod0, _ := w.latest()
		never := pod0.Spec.RestartPolicy == corev1.RestartPolicyNever
		switch {
		case allTerminated && never && anyFailed:
			s.Phase = corev1.PodFailed
		case allTerminated && never:
			s.Phase = corev1.PodSucceeded
		case anyRunning || allTerminated:
			s.Phase = corev1.PodRunning
		default:
			s.Phase = corev1.PodPending
		}
		if w.started.IsZero() {
			w.started = time.Now()
		}
		if s.StartTime == nil {
			s.StartTime = ptr(metav1.NewTime(w.started))
		}
		s.HostIP, s.PodIP = "127.0.0.1", w.ip
		s.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
		s.PodIPs = []corev1.PodIP{{IP: w.ip}}
		s.ContainerStatuses = statuses
		ready := allReady && s.Phase == corev1.PodRunning
		setCondition(s, corev1.PodReadyToStartContainers, true, "")
		setCondition(s, corev1.PodInitialized, true, "")
		setCondition(s, corev1.ContainersReady, ready, "ContainersNotReady")
		setCondition(s, corev1.PodReady, ready, "ContainersNotReady")
		if equalStatus(old, s) {
			return nil
		}
		_, err := w.r.client.CoreV1().Pods(w.namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		w.logf("updating status: %v", err)
	}
}

func equalStatus(a, b *corev1.PodStatus) bool { return equality.Semantic.DeepEqual(a, b) }

func setCondition(s *corev1.PodStatus, typ corev1.PodConditionType, ok bool, reason string) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
		reason = ""
	}
	for i := range s.Conditions {
		if s.Conditions[i].Type == typ {
			if s.Conditions[i].Status != status {
				s.Conditions[i].Status = status
				s.Conditions[i].LastTransitionTime = metav1.Now()
			}
			s.Conditions[i].Reason = reason
			return
		}
	}
	s.Conditions = append(s.Conditions, corev1.PodCondition{Type: typ, Status: status, Reason: reason, LastTransitionTime: metav1.Now()})
}

func ptr[T any](v T) *T { return &v }
