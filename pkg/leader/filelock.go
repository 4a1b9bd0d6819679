package leader

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// DefaultLockPoll is how often a standby tries the lock: takeover happens
// within this long after the holder's process ends.
const DefaultLockPoll = 10 * time.Millisecond

// DefaultLockCheck is how often the holder checks that the file it holds
// locked is still the file at the lock path. A lock file that is removed or
// replaced (rm, a tmp cleaner) while held is noticed within this long, and
// leadership ends then. A standby creates a new file and leads milliseconds
// after the removal, so for up to this long two processes believe they lead;
// the fence in the database keeps the old one from committing a slot.
const DefaultLockCheck = time.Second

// FileLock elects the process holding an exclusive lock on a file (flock(2)
// on Linux and macOS, LockFileEx on Windows, through gofrs/flock).
//
// The lock belongs to an open file, not to its path. gofrs/flock reopens the
// path on every failed try, so once the held file is deleted a standby
// creates a new one at the path, locks it and leads. The holder therefore
// checks, right after locking and every DefaultLockCheck while leading, that
// the locked file is still the one at the path (device and inode, or
// Windows's volume serial and file index, via os.SameFile); when it is not,
// or the path is gone, leadership ends as a lost Lease's does: lead's
// context is cancelled and Run returns ErrLeadershipLost. On Windows a held
// lock file usually cannot be deleted at all.
type FileLock struct {
	path     string
	identity string
	poll     time.Duration // DefaultLockPoll; shorter in tests
	check    time.Duration // DefaultLockCheck; shorter in tests
	log      *slog.Logger

	mu   sync.Mutex
	lost error // why leadership ended while lead still runs; Healthy reports it
}

// NewFileLock returns an elector on the lock file path. It fails with a
// message naming the fix when the file's directory does not exist, is not
// writable, or sits on a network file system (where a file lock does not
// exclude processes on other hosts).
func NewFileLock(path, identity string, log *slog.Logger) (*FileLock, error) {
	if err := CheckLockFile(path); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &FileLock{path: abs, identity: identity, poll: DefaultLockPoll, check: DefaultLockCheck, log: log}, nil
}

// CheckLockFile validates a lock file path without creating anything. Where
// the platform can tell, it refuses a directory that is not writable
// (Linux, macOS) or on a network file system (Linux: NFS, SMB/CIFS; macOS:
// nfs, smbfs, afpfs, webdav; Windows: a UNC path or a network drive).
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
	if !dirWritable(dir) {
		return fmt.Errorf("lock file directory %s is not writable: fix its permissions or point --lock-file elsewhere", dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("lock file %s is a directory: point --lock-file at a file", path)
	}
	if fsType, ok := networkFS(dir); ok {
		return fmt.Errorf("lock file directory %s is on a network file system (%s), where a file lock does not exclude other hosts: use a local path, or --mode lease across hosts", dir, fsType)
	}
	return nil
}

// Identity implements Elector.
func (f *FileLock) Identity() string { return f.identity }

// Scope implements Elector.
func (f *FileLock) Scope() string { return "filelock:" + f.path }

// Healthy implements Elector: it reports an error from the moment the held
// lock file is found removed or replaced until Run returns.
func (f *FileLock) Healthy() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost
}

func (f *FileLock) setLost(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost = err
}

// Run implements Elector. lead's context is cancelled only when the lock
// file is removed or replaced while held; Run then returns ErrLeadershipLost
// (wrapping lead's error, if any) once lead has returned.
func (f *FileLock) Run(ctx context.Context, lead func(context.Context) error) error {
	fl := flock.New(f.path)
	f.log.Info("waiting for the file lock", "lock_file", f.path)
	for {
		ok, err := fl.TryLockContext(ctx, f.poll)
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lock %s: %w", f.path, err)
		}
		// The file opened may have been removed or replaced before it was
		// locked, and another process may hold the lock on the new one.
		err = f.held(fl)
		if err == nil {
			break
		}
		f.log.Warn("locked a lock file that is no longer at its path: trying again", "lock_file", f.path, "err", err)
		f.unlock(fl)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.poll):
		}
	}
	defer f.unlock(fl)
	f.log.Info("acquired the file lock: leading", "lock_file", f.path)

	// Shutdown does not cancel lead's context: lead notices it itself.
	leaderCtx, lose := context.WithCancel(context.WithoutCancel(ctx))
	defer lose()
	leadDone := make(chan error, 1)
	go func() { leadDone <- lead(leaderCtx) }()
	tick := time.NewTicker(f.check)
	defer tick.Stop()
	for {
		select {
		case err := <-leadDone:
			return err
		case <-tick.C:
		}
		if why := f.held(fl); why != nil {
			f.setLost(why)
			defer f.setLost(nil)
			f.log.Error("lost the file lock: "+why.Error(), "lock_file", f.path)
			lose()
			if err := <-leadDone; err != nil {
				return fmt.Errorf("%w: %w (lead: %w)", ErrLeadershipLost, why, err)
			}
			return fmt.Errorf("%w: %w", ErrLeadershipLost, why)
		}
	}
}

// held reports an error when the file fl holds locked is no longer the file
// at the lock path.
func (f *FileLock) held(fl *flock.Flock) error {
	locked, err := fl.Stat() // the held descriptor's file
	if err != nil {
		return fmt.Errorf("lock file %s: stat of the held file: %w", f.path, err)
	}
	at, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist), err == nil && !os.SameFile(locked, at):
		return fmt.Errorf("lock file %s was removed or replaced while held: another process may lead now", f.path)
	case err != nil:
		return fmt.Errorf("lock file %s cannot be checked while held (another process may lead now): %w", f.path, err)
	}
	return nil
}

// isUNC reports whether a Windows volume name (filepath.VolumeName) is a
// network share: \\server\share or \\?\UNC\server\share, but not a
// device path such as \\?\C: or \\.\C:. It is here, not in
// filelock_windows.go, so that its test runs on every platform.
func isUNC(vol string) bool {
	switch {
	case strings.HasPrefix(strings.ToUpper(vol), `\\?\UNC\`):
		return true
	case strings.HasPrefix(vol, `\\?\`), strings.HasPrefix(vol, `\\.\`):
		return false
	}
	return strings.HasPrefix(vol, `\\`)
}

func (f *FileLock) unlock(fl *flock.Flock) {
	if err := fl.Unlock(); err != nil {
		f.log.Warn("unlock", "lock_file", f.path, "err", err)
	}
}
