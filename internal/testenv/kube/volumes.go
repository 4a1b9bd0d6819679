package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// The kubelet's layout of a configMap, secret, downwardAPI or projected
// volume (pkg/volume/util.AtomicWriter): the files of one version live in a
// timestamped directory, "..data" is a symlink to it and every top-level
// name is a symlink through "..data". An update writes a new timestamped
// directory, renames a new "..data" symlink over the old one and removes the
// old directory, so a reader sees the old or the new version, never a mix.
const (
	atomicDataDir    = "..data"
	atomicDataDirTmp = "..data_tmp"
	atomicTSFormat   = "..2006_01_02_15_04_05."
)

// volumeResync is how often a running Pod's atomic volumes are re-read even
// without a watch event (the kubelet's periodic sync). Changes normally
// arrive through the runner's ConfigMap and Secret informers within
// milliseconds.
const volumeResync = time.Minute

// objRef names a ConfigMap or Secret a Pod's volumes read.
type objRef struct{ kind, namespace, name string }

const (
	kindConfigMap = "ConfigMap"
	kindSecret    = "Secret"
)

// isAtomic reports whether the kubelet writes the volume with AtomicWriter
// (and refreshes it while the Pod runs).
func isAtomic(v *corev1.Volume) bool {
	return v.Secret != nil || v.ConfigMap != nil || v.DownwardAPI != nil || v.Projected != nil
}

// volumeRefs lists the ConfigMaps and Secrets the Pod's volumes read, and
// whether any volume reads the Pod's own metadata (downwardAPI).
func volumeRefs(pod *corev1.Pod) (map[objRef]bool, bool) {
	refs := map[objRef]bool{}
	downward := false
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.Secret != nil:
			refs[objRef{kindSecret, pod.Namespace, v.Secret.SecretName}] = true
		case v.ConfigMap != nil:
			refs[objRef{kindConfigMap, pod.Namespace, v.ConfigMap.Name}] = true
		case v.DownwardAPI != nil:
			downward = true
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				switch {
				case s.Secret != nil:
					refs[objRef{kindSecret, pod.Namespace, s.Secret.Name}] = true
				case s.ConfigMap != nil:
					refs[objRef{kindConfigMap, pod.Namespace, s.ConfigMap.Name}] = true
				case s.DownwardAPI != nil:
					downward = true
				}
			}
		}
	}
	return refs, downward
}

// watchObjects adds the handlers that tell the workers of Pods that mount a
// ConfigMap or Secret when it changes.
func (r *PodRunner) watchObjects(inf cache.SharedIndexInformer, kind string) error {
	notify := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		o, err := metaOf(obj)
		if err != nil {
			return
		}
		r.objectChanged(objRef{kind, o.namespace, o.name})
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	})
	return err
}

type objMeta struct{ namespace, name string }

func metaOf(obj any) (objMeta, error) {
	switch o := obj.(type) {
	case *corev1.ConfigMap:
		return objMeta{o.Namespace, o.Name}, nil
	case *corev1.Secret:
		return objMeta{o.Namespace, o.Name}, nil
	}
	return objMeta{}, fmt.Errorf("unexpected object %T", obj)
}

func (r *PodRunner) objectChanged(ref objRef) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		if w.refs[ref] {
			w.pokeVolumes()
		}
	}
}

func (w *podWorker) pokeVolumes() {
	select {
	case w.volumesChanged <- struct{}{}:
	default:
	}
}

// metadataChanged reports whether a Pod update changes what a downwardAPI
// volume can show (labels, annotations).
func metadataChanged(old, pod *corev1.Pod) bool {
	return old != nil && (!maps.Equal(old.Labels, pod.Labels) || !maps.Equal(old.Annotations, pod.Annotations))
}

// syncVolumes keeps the Pod's configMap, secret, downwardAPI and projected
// volumes up to date while it runs, as the kubelet does: on every change of
// an object they read (or of the Pod's labels and annotations), and every
// volumeResync. A volume whose object cannot be read keeps its content.
func (w *podWorker) syncVolumes(ctx context.Context) {
	t := time.NewTicker(volumeResync)
	defer t.Stop()
	failed := map[string]string{} // volume -> last error reported
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.done:
			return
		case <-w.volumesChanged:
		case <-t.C:
		}
		pod, gone := w.latest()
		if gone || pod.DeletionTimestamp != nil {
			return
		}
		for i := range pod.Spec.Volumes {
			v := &pod.Spec.Volumes[i]
			if !isAtomic(v) {
				continue
			}
			changed, err := w.materialise(ctx, pod, *v, filepath.Join(w.dir, "volumes", v.Name))
			switch {
			case err != nil && ctx.Err() == nil:
				if msg := err.Error(); failed[v.Name] != msg {
					failed[v.Name] = msg
					w.logf("volume %q: not refreshed, keeping its content: %v", v.Name, err)
				}
			case err == nil:
				delete(failed, v.Name)
				if changed {
					w.logf("volume %q: refreshed", v.Name)
				}
			}
		}
	}
}

// writeAtomic makes dir hold files in the kubelet's layout (see
// atomicDataDir) and reports whether it wrote anything: a payload equal to
// the one written last is left alone.
func (w *podWorker) writeAtomic(pod *corev1.Pod, name, dir string, files map[string]fileData) (bool, error) {
	old, had := w.payloads[name]
	if had && samePayload(old, files) {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	oldTS, _ := os.Readlink(filepath.Join(dir, atomicDataDir))

	// 1. The new version in a timestamped directory of its own.
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format(atomicTSFormat))
	if err != nil {
		return false, err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return false, err
	}
	for name, f := range files {
		p := filepath.Join(ts, filepath.Clean("/"+name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			return false, err
		}
		if err := w.chown(pod, p, f.mode); err != nil {
			return false, err
		}
	}
	// 2. Swap ..data to it in one rename.
	tmp := filepath.Join(dir, atomicDataDirTmp)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, atomicDataDir)); err != nil {
		return false, err
	}
	// 3. A symlink through ..data for every top-level name, then away with
	// the names the new version does not have and with the old version.
	tops := topLevel(files)
	for top := range tops {
		link, target := filepath.Join(dir, top), filepath.Join(atomicDataDir, top)
		if got, err := os.Readlink(link); err == nil && got == target {
			continue
		}
		if err := os.Symlink(target, link); err != nil {
			return false, err
		}
	}
	for top := range topLevel(old) {
		if !tops[top] {
			if err := os.Remove(filepath.Join(dir, top)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return false, err
			}
		}
	}
	if oldTS != "" && oldTS != filepath.Base(ts) && strings.HasPrefix(oldTS, "..") && !strings.Contains(oldTS, "/") {
		if err := os.RemoveAll(filepath.Join(dir, oldTS)); err != nil {
			return false, err
		}
	}
	w.payloads[name] = files
	return true, nil
}

func topLevel(files map[string]fileData) map[string]bool {
	tops := map[string]bool{}
	for name := range files {
		top, _, _ := strings.Cut(strings.TrimPrefix(filepath.Clean("/"+name), "/"), "/")
		tops[top] = true
	}
	return tops
}

func samePayload(a, b map[string]fileData) bool {
	if len(a) != len(b) {
		return false
	}
	for k, fa := range a {
		fb, ok := b[k]
		if !ok || fa.mode != fb.mode || !bytes.Equal(fa.data, fb.data) {
			return false
		}
	}
	return true
}

// subPath is a container's subPath mount of an atomic volume. The kubelet
// bind-mounts the file (or directory) the subPath resolves to when the
// container starts, so the container keeps that version while the volume
// moves on, and a restarted container sees the current one. The runner
// hard-links the resolved files to a directory of the container's at each
// start, which has the same effect: the old inodes outlive the old
// timestamped directory.
type subPath struct{ src, dst string }

// refresh points dst at what src resolves to now.
func (s subPath) refresh() error {
	real, err := filepath.EvalSymlinks(s.src)
	if err != nil {
		return fmt.Errorf("subPath %s: %w", s.src, err)
	}
	if err := os.RemoveAll(s.dst); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.dst), 0o755); err != nil {
		return err
	}
	return linkTree(real, s.dst)
}

// linkTree recreates src at dst with hard links to src's files (copies where
// a link is refused).
func linkTree(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := linkTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		return nil
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst, fi)
}

func copyFile(src, dst string, fi os.FileInfo) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		if err := os.Chown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	return os.Chmod(dst, fi.Mode().Perm())
}
