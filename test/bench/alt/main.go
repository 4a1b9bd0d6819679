// Command alt runs the alternatives leasecron is measured against in
// BENCHMARKS.md (make bench). It is test code, not part of leasecron.
//
//	alt -mode clientgo -kubeconfig K -namespace NS -lease-name N -identity I
//	    client-go leaderelection as its own example uses it: a LeaseLock,
//	    ReleaseOnCancel, the default 15s/10s/2s timings; SIGTERM cancels.
//	alt -mode trylock-once -lock-file F
//	    the lock-file pattern leasecron replaces: try a non-blocking flock once;
//	    a loser gives up and never schedules.
//	alt -mode trylock-poll -lock-file F
//	    the same, but a loser tries again every second.
//
// Each prints one JSON line {"msg":"leading",...} on stderr when it starts
// leading, as leasecron does, so the benchmark reads both the same way.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

func main() {
	var mode, kubeconfig, namespace, name, identity, lockFile string
	flag.StringVar(&mode, "mode", "", "clientgo, trylock-once or trylock-poll")
	flag.StringVar(&kubeconfig, "kubeconfig", "", "clientgo: kubeconfig file")
	flag.StringVar(&namespace, "namespace", "default", "clientgo: the Lease's namespace")
	flag.StringVar(&name, "lease-name", "alt", "clientgo: the Lease's name")
	flag.StringVar(&identity, "identity", "", "this process's identity")
	flag.StringVar(&lockFile, "lock-file", "", "trylock-*: the lock file")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("identity", identity)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch mode {
	case "clientgo":
		err = clientGo(ctx, log, kubeconfig, namespace, name, identity)
	case "trylock-once", "trylock-poll":
		err = tryLock(ctx, log, lockFile, mode == "trylock-poll")
	default:
		err = fmt.Errorf("unknown -mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "alt:", err)
		os.Exit(1)
	}
}

func clientGo(ctx context.Context, log *slog.Logger, kubeconfig, namespace, name, identity string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	log.Info("standing by: campaigning for the lease")
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading")
				<-ctx.Done()
			},
			OnStoppedLeading: func() { log.Info("stopped leading") },
		},
	})
	return nil
}

func tryLock(ctx context.Context, log *slog.Logger, path string, poll bool) error {
	l := flock.New(path)
	standing := false
	for {
		ok, err := l.TryLock()
		if err != nil {
			return err
		}
		if ok {
			log.Info("leading")
			<-ctx.Done()
			return l.Unlock()
		}
		if !poll {
			log.Info("standing by: lost the lock, giving up as the old workers did")
			<-ctx.Done()
			return nil
		}
		if !standing {
			log.Info("standing by: lock held, trying again every second")
			standing = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
