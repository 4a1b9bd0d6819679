package leader

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileLockOneLeaderThenHandover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leasecron.lock")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := NewFileLock(path, "a", log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewFileLock(path, "b", log)
	if err != nil {
		t.Fatal(err)
	}
	leads := make(chan string, 2)
	release := make(chan struct{})
	run := func(e *FileLock) {
		_ = e.Run(context.Background(), func(ctx context.Context) error {
			leads <- e.Identity()
			<-release
			return nil
		})
	}
	go run(a)
	first := <-leads
	go run(b)
	select {
	case second := <-leads:
		t.Fatalf("%s leads while %s holds the lock", second, first)
	case <-time.After(100 * time.Millisecond): // ten lock polls: long enough to notice a second leader
	}
	start := time.Now()
	release <- struct{}{}
	if second := <-leads; second == first {
		t.Fatalf("%s led twice", first)
	}
	t.Logf("handover in %s", time.Since(start))
	close(release)
}

func TestFileLockShutdownWhileWaiting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leasecron.lock")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, _ := NewFileLock(path, "a", log)
	b, _ := NewFileLock(path, "b", log)
	hold := make(chan struct{})
	defer close(hold)
	leading := make(chan struct{})
	go func() {
		_ = a.Run(context.Background(), func(context.Context) error { close(leading); <-hold; return nil })
	}()
	<-leading
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, func(context.Context) error { t.Error("b led"); return nil }) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil when shut down before leading", err)
	}
}

func TestCheckLockFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"", "is empty"},
		{filepath.Join(dir, "missing", "x.lock"), "does not exist"},
		{filepath.Join(dir, "sub"), "is a directory"},
	} {
		if err := CheckLockFile(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckLockFile(%q) = %v, want %q", tc.path, err, tc.want)
		}
	}
	if err := CheckLockFile(filepath.Join(dir, "ok.lock")); err != nil {
		t.Errorf("valid path rejected: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("CheckLockFile wrote files: %v", entries)
	}
}
