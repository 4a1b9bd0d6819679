package testenv

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Delivery is one request as a Receiver saw it.
type Delivery struct {
	Method string
	Path   string
	Query  url.Values
	Host   string
	Header http.Header
	Body   string
	// At is when the receiver had read the request's body.
	At time.Time
}

// Key is the delivery's Idempotency-Key.
func (d Delivery) Key() string { return d.Header.Get("Idempotency-Key") }

// Receiver is a real HTTP server of the test's own that records every
// delivery, for the jobs that call out. It stops at the test's cleanup.
type Receiver struct {
	srv    *httptest.Server
	answer func(w http.ResponseWriter, r *http.Request, n int)

	mu  sync.Mutex
	got []Delivery
}

// NewReceiver starts a receiver. answer writes the response to the n-th
// delivery (from 1); nil answers 200 OK.
func NewReceiver(t testing.TB, answer func(w http.ResponseWriter, r *http.Request, n int)) *Receiver {
	t.Helper()
	rc := &Receiver{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("receiver: reading the body: %v", err)
		}
		rc.mu.Lock()
		rc.got = append(rc.got, Delivery{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Host: r.Host, Header: r.Header.Clone(), Body: string(b), At: time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		if rc.answer == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		rc.answer(w, r, n)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// URL is the receiver's base URL.
func (rc *Receiver) URL() string { return rc.srv.URL }

// Deliveries returns what the receiver saw, in order; with a path, only the
// deliveries to it.
func (rc *Receiver) Deliveries(path ...string) []Delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []Delivery
	for _, d := range rc.got {
		if len(path) == 0 || d.Path == path[0] {
			out = append(out, d)
		}
	}
	return out
}

// PerKey counts deliveries by Idempotency-Key.
func PerKey(ds []Delivery) map[string]int {
	m := map[string]int{}
	for _, d := range ds {
		m[d.Key()]++
	}
	return m
}
