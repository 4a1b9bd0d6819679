package leader

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// twoFileLocks returns two electors, a and b, on one new lock file.
func twoFileLocks(t *testing.T) (path string, a, b *FileLock) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "leasecron.lock")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := NewFileLock(path, "a", log)
	if err != nil {
		t.Fatal(err)
	}
	b, err = NewFileLock(path, "b", log)
	if err != nil {
		t.Fatal(err)
	}
	return path, a, b
}

func TestFileLockOneLeaderThenHandover(t *testing.T) {
	_, a, b := twoFileLocks(t)
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

// TestFileLockRemovedOrReplacedWhileHeld: gofrs/flock reopens the path on
// every try, so a standby leads on a new file moments after the held one is
// removed or replaced. The holder must notice (within DefaultLockCheck),
// cancel lead's context, report itself unhealthy until lead returns, and
// return ErrLeadershipLost naming the file; the standby is then the only
// leader.
func TestFileLockRemovedOrReplacedWhileHeld(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, path string)
	}{
		{"removed", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced", func(t *testing.T, path string) {
			tmp := path + ".new"
			if err := os.WriteFile(tmp, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, a, b := twoFileLocks(t)
			var leaders atomic.Int32
			aLeads, aLost, aUnhealthy := make(chan struct{}), make(chan time.Time, 1), make(chan error, 1)
			aDone := make(chan error, 1)
			go func() {
				aDone <- a.Run(context.Background(), func(ctx context.Context) error {
					leaders.Add(1)
					defer leaders.Add(-1)
					close(aLeads)
					<-ctx.Done()
					aLost <- time.Now()
					aUnhealthy <- a.Healthy() // lead still runs: the elector knows it lost
					return nil
				})
			}()
			<-aLeads
			bLeads := make(chan struct{})
			bCtx, stopB := context.WithCancel(context.Background())
			bDone := make(chan error, 1)
			go func() {
				bDone <- b.Run(bCtx, func(ctx context.Context) error {
					leaders.Add(1)
					defer leaders.Add(-1)
					close(bLeads)
					<-bCtx.Done() // lead notices shutdown itself; b's file stays in place
					if ctx.Err() != nil {
						t.Error("b's lead context was cancelled, but its lock file is in place")
					}
					return nil
				})
			}()
			defer func() {
				stopB()
				<-bDone
			}()

			broken := time.Now()
			tc.breakIt(t, path)
			const within = 10 * time.Second // ten DefaultLockCheck periods
			deadline := time.After(within)
			var lostAt time.Time
			select {
			case lostAt = <-aLost:
			case <-deadline:
				t.Fatalf("a still leads %s after its lock file was %s", within, tc.name)
			}
			t.Logf("a gave up leadership %s after the lock file was %s", lostAt.Sub(broken).Round(time.Millisecond), tc.name)
			if err := <-aUnhealthy; err == nil || !strings.Contains(err.Error(), "removed or replaced") {
				t.Errorf("a.Healthy() while lead winds down = %v, want the removed-or-replaced error", err)
			}
			select {
			case err := <-aDone:
				if !errors.Is(err, ErrLeadershipLost) || !strings.Contains(err.Error(), path+" was removed or replaced while held") {
					t.Errorf("a.Run = %v, want ErrLeadershipLost naming %s", err, path)
				}
			case <-deadline:
				t.Fatal("a.Run did not return after lead returned")
			}
			if err := a.Healthy(); err != nil {
				t.Errorf("a.Healthy() after Run returned = %v, want nil", err)
			}
			select {
			case <-bLeads:
			case <-deadline:
				t.Fatal("b does not lead on the new lock file")
			}
			if n := leaders.Load(); n != 1 {
				t.Errorf("%d processes lead after a gave up, want 1 (b)", n)
			}
		})
	}
}

func TestIsUNC(t *testing.T) {
	for vol, want := range map[string]bool{
		`\\server\share`:       true,
		`\\?\UNC\server\share`: true,
		`\\?\unc\server\share`: true,
		`C:`:                   false,
		`\\?\C:`:               false,
		`\\.\C:`:               false,
		``:                     false,
	} {
		if got := isUNC(vol); got != want {
			t.Errorf("isUNC(%q) = %v, want %v", vol, got, want)
		}
	}
}
