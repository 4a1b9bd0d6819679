package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one server process whose combined output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // valid after done is closed
}

// startProc starts bin with args, appending stdout+stderr to logPath. The child
// gets its own process group (so a terminal's ^C goes to the test binary, whose
// cleanup stops it) and Pdeathsig SIGKILL (so it dies with the test binary, even
// on a panic, timeout or kill -9 of `go test`).
func startProc(name, bin string, args []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== %s %s: %s %s\n", time.Now().Format(time.RFC3339Nano), name, bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs it.
// It is safe to call more than once and on an exited process.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Pdeathsig is delivered when the *thread* that forked the child exits, not the
// process (golang/go#27505). Go only retires an OS thread when a goroutine that
// locked it returns, so all children are forked from one goroutine that locks
// its thread and never returns: the signal then fires only when the test binary
// itself dies.
var (
	spawnOnce sync.Once
	spawnReqs = make(chan spawnReq)
)

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for r := range spawnReqs {
				r.res <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd: cmd, res: make(chan error, 1)}
	spawnReqs <- r
	return <-r.res
}

// tail returns the last n lines of the process log.
func (p *proc) tail(n int) string {
	return tailFile(p.logPath, n)
}

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// errAddrInUse reports that a process died because a port picked by freePorts
// was taken in the meantime; the caller retries with new ports.
var errAddrInUse = errors.New("address already in use")

// waitReady polls url with a short interval until it answers 200 with body
// "ok"-ish, the process exits, or ctx expires. Never a fixed sleep.
func waitReady(ctx context.Context, p *proc, client *http.Client, url, bearer string, wantBody func([]byte) bool) error {
	var last string
	interval := 50 * time.Millisecond
	for {
		if p.exited() {
			if strings.Contains(p.tail(200), "address already in use") {
				return fmt.Errorf("%s exited: %w", p.name, errAddrInUse)
			}
			return fmt.Errorf("%s exited before becoming ready (%v)", p.name, p.waitErr)
		}
		reqCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && wantBody(body) {
				cancel()
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, firstLines(body, 40))
		} else {
			last = err.Error()
		}
		cancel()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w; last answer: %s", p.name, url, ctx.Err(), last)
		case <-p.done:
		case <-time.After(interval):
		}
		if interval < 250*time.Millisecond {
			interval += 50 * time.Millisecond
		}
	}
}

func firstLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	// /readyz?verbose lists checks; keep only failing ones when it is long.
	if len(lines) > n {
		var bad []string
		for _, l := range lines {
			if strings.Contains(l, "[-]") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			lines = bad
		}
		if len(lines) > n {
			lines = lines[:n]
		}
	}
	return strings.Join(lines, "\n")
}

// freePorts reserves n distinct free loopback TCP ports by listening on :0
// (all at once, so they are distinct) and releasing them. Another process may
// grab one before the server binds it; Start retries in that case.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func insecureLocalClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // self-signed KCM serving cert, loopback only
	}}
}

func itoa(i int) string { return strconv.Itoa(i) }
