package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"
)

// DefaultLockPoll is how often a standby tries the lock: takeover happens
// within this long after the holder's process ends.
const DefaultLockPoll = 10 * time.Millisecond

// FileLock elects the process holding an exclusive lock on a file.
type FileLock struct {
	path     string
	identity string
	poll     time.Duration
	log      *slog.Logger
}

// NewFileLock returns an elector on the lock file path. It fails with a
// message naming the fix when the file's directory does not exist, is not
// writable, or sits on a network file system (where flock does not exclude
// processes on other hosts).
func NewFileLock(path, identity string, log *slog.Logger) (*FileLock, error) {
	if err := CheckLockFile(path); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	return &FileLock{path: abs, identity: identity, poll: DefaultLockPoll, log: log}, nil
}

// CheckLockFile validates a lock file path without creating anything.
func CheckLockFile(path string) error {
	if path == "" {
		return errors.New("--lock-file is empty: give a path such as ./leasecron.lock")
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("lock file directory %s does not exist: create it or point --lock-file elsewhere", dir)
	}
	if !st.IsDir() {
		return fmt.Errorf("lock file directory %s is not a directory: point --lock-file elsewhere", dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("lock file directory %s is not writable: fix its permissions or point --lock-file elsewhere", dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("lock file %s is a directory: point --lock-file at a file", path)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && isNetworkFS(fs.Type) {
		return fmt.Errorf("lock file directory %s is on a network file system, where a file lock does not exclude other hosts: use a local path, or --mode lease across hosts", dir)
	}
	return nil
}

func isNetworkFS(t int64) bool {
	const (
		nfs  = 0x6969
		smb  = 0x517b
		cifs = 0xff534d42
		smb2 = 0xfe534d42
	)
	switch t {
	case nfs, smb, cifs, smb2:
		return true
	}
	return false
}

// Identity implements Elector.
func (f *FileLock) Identity() string { return f.identity }

// Scope implements Elector.
func (f *FileLock) Scope() string { return "filelock:" + f.path }

// Healthy implements Elector: a held flock cannot be lost.
func (f *FileLock) Healthy() error { return nil }

// Run implements Elector.
func (f *FileLock) Run(ctx context.Context, lead func(context.Context) error) error {
	fl := flock.New(f.path)
	f.log.Info("waiting for the file lock", "lock_file", f.path)
	ok, err := fl.TryLockContext(ctx, f.poll)
	if !ok {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("lock %s: %w", f.path, err)
	}
	defer func() {
		if err := fl.Unlock(); err != nil {
			f.log.Warn("unlock", "lock_file", f.path, "err", err)
		}
	}()
	f.log.Info("acquired the file lock: leading", "lock_file", f.path)
	// Leadership by flock ends only when we let go, so lead's context is
	// never cancelled from here.
	return lead(context.WithoutCancel(ctx))
}
