package testenv

import (
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy is a TCP proxy on loopback in front of a database server, for tests
// of a client that is cut off. BlackHole makes it stop forwarding in both
// directions while keeping every connection open, as a network partition
// does: neither side sees an error, the server sees an idle session, and the
// client's next request hangs until its own timeout.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	holed  bool
	conns  []net.Conn
	wg     sync.WaitGroup
	closed bool
}

// NewProxy starts a proxy to target (host:port) and stops it in t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// ProxyDSN starts a proxy in front of the server of dsn (a URL-form mysql or
// postgres DSN from DSN) and returns the proxy and the DSN through it.
func ProxyDSN(t testing.TB, dsn string) (*Proxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("testenv: proxy: DSN is not a URL: %v", err)
	}
	p := NewProxy(t, u.Host)
	u.Host = p.Addr()
	return p, u.String()
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// BlackHole stops all forwarding, on open and new connections alike, without
// closing anything.
func (p *Proxy) BlackHole() {
	p.mu.Lock()
	p.holed = true
	p.mu.Unlock()
}

func (p *Proxy) blackHoled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holed
}

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		if p.blackHoled() {
			continue // accepted, never answered
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(server) {
			return
		}
		p.wg.Add(2)
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

// pipe copies from src to dst until either side closes, dropping what it
// reads once the proxy is black-holed.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.blackHoled() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			// Pass a close on, unless partitioned: then the other side
			// must not learn of it either.
			if !p.blackHoled() {
				_ = dst.Close()
			}
			return
		}
	}
}
