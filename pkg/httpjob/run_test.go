package httpjob_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasecron/leasecron/pkg/spec"
)

// Header values from a file and from the environment are read at every
// attempt, so a rotated Secret is used by the next attempt.
func TestHeadersFromAreReadAtEveryAttempt(t *testing.T) {
	rc := newReceiver(t, nil)
	token := writeFile(t, "first\n")
	var mu sync.Mutex
	vars := map[string]string{"API_KEY": "key-1"}
	env := spec.Env{LookupEnv: func(k string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		v, ok := vars[k]
		return v, ok
	}}
	w := work(t, &spec.HTTP{URL: rc.URL(), HeadersFrom: []spec.HeaderFrom{
		{Name: "Authorization", File: token, Prefix: "Bearer "},
		{Name: "X-Api-Key", Env: "API_KEY"},
	}}, env)
	ctx := context.Background()
	if err := w.Run(ctx, slotOf(1)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(token, []byte("second\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	vars["API_KEY"] = "key-2"
	mu.Unlock()
	if err := w.Run(ctx, slotOf(2)); err != nil {
		t.Fatal(err)
	}
	ds := rc.Deliveries()
	if len(ds) != 2 {
		t.Fatalf("receiver saw %d deliveries, want 2", len(ds))
	}
	for i, want := range [][2]string{{"Bearer first", "key-1"}, {"Bearer second", "key-2"}} {
		if got := [2]string{ds[i].Header.Get("Authorization"), ds[i].Header.Get("X-Api-Key")}; got != want {
			t.Errorf("attempt %d sent %q, want %q", i+1, got, want)
		}
	}

	// A Secret that disappears fails the attempt, naming the header and
	// the file.
	if err := os.Remove(token); err != nil {
		t.Fatal(err)
	}
	err := w.Run(ctx, slotOf(3))
	if err == nil || !strings.Contains(err.Error(), "header Authorization") || !strings.Contains(err.Error(), token) {
		t.Fatalf("Run without the file = %v, want an error naming the header and the file", err)
	}
	if n := len(rc.Deliveries()); n != 2 {
		t.Fatalf("receiver saw %d deliveries, want none without the header", n)
	}
}

// A transport error shows the URL without userinfo and query.
func TestTransportErrorIsRedacted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	w := work(t, &spec.HTTP{URL: "http://robot:pw-secret@" + addr + "/x?token=q-secret"}, spec.Env{})
	err = w.Run(context.Background(), slotOf(1))
	if err == nil {
		t.Fatal("Run to a closed port succeeded")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "POST http://"+addr+"/x: ") || strings.Contains(msg, "secret") {
		t.Fatalf("error = %q, want it to start with the URL without userinfo and query, and no secret", msg)
	}
	var ne net.Error
	if !errors.As(err, &ne) {
		t.Fatalf("error = %#v, want it to wrap the transport's net.Error", err)
	}
}

// spec.http.timeout bounds the request.
func TestTimeoutBoundsTheRequest(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		<-r.Context().Done() // never answers; returns once the client gives up
	})
	w := work(t, &spec.HTTP{URL: rc.URL(), Timeout: dur(50 * time.Millisecond)}, spec.Env{})
	err := w.Run(context.Background(), slotOf(1))
	if err == nil || !strings.Contains(err.Error(), "no answer within 50ms") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want no answer within 50ms", err)
	}
}

// The method is sent as given; without a body there is no Content-Type;
// a Host header sets the request's host.
func TestMethodAndHost(t *testing.T) {
	rc := newReceiver(t, nil)
	w := work(t, &spec.HTTP{URL: rc.URL() + "/purge", Method: "PURGE", Headers: map[string]string{"Host": "cache.example.test"}}, spec.Env{})
	if err := w.Run(context.Background(), slotOf(1)); err != nil {
		t.Fatal(err)
	}
	ds := rc.Deliveries()
	if len(ds) != 1 {
		t.Fatalf("receiver saw %d deliveries, want 1", len(ds))
	}
	d := ds[0]
	if d.Method != "PURGE" || d.Host != "cache.example.test" || d.Body != "" || d.Header.Get("Content-Type") != "" || d.Header.Get("Idempotency-Key") != slotKey {
		t.Fatalf("delivery = %s to host %s, body %q, Content-Type %q, key %q; want PURGE to cache.example.test, no body, no Content-Type, key %q",
			d.Method, d.Host, d.Body, d.Header.Get("Content-Type"), d.Header.Get("Idempotency-Key"), slotKey)
	}
}

// Following a redirect to another host does not take the headersFrom
// secrets along; the same host gets them.
func TestRedirectToAnotherHostDropsSecrets(t *testing.T) {
	other := newReceiver(t, nil)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		switch r.URL.Path {
		case "/away":
			// 127.0.0.1 and localhost are different hosts to the client.
			http.Redirect(w, r, strings.Replace(other.URL(), "127.0.0.1", "localhost", 1)+"/landed", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/landed", http.StatusTemporaryRedirect)
		}
	})
	token := writeFile(t, "tok\n")
	for _, path := range []string{"/away", "/here"} {
		w := work(t, &spec.HTTP{URL: rc.URL() + path, FollowRedirects: true,
			HeadersFrom: []spec.HeaderFrom{{Name: "X-Token", File: token}}}, spec.Env{})
		if err := w.Run(context.Background(), slotOf(1)); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	away, here := other.Deliveries("/landed"), rc.Deliveries("/landed")
	if len(away) != 1 || len(here) != 1 {
		t.Fatalf("deliveries after the redirects: %d away, %d here; want 1 each", len(away), len(here))
	}
	if v := away[0].Header.Get("X-Token"); v != "" || away[0].Header.Get("Idempotency-Key") != slotKey {
		t.Fatalf("the other host got X-Token %q and key %q, want no token and the key", v, away[0].Header.Get("Idempotency-Key"))
	}
	if v := here[0].Header.Get("X-Token"); v != "tok" {
		t.Fatalf("the same host got X-Token %q, want tok", v)
	}
}
