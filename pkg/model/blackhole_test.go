package model

import (
	"context"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
)

// A database server that accepts connections and never answers (a
// partition, a black-holed route) must not hang Open: it gives up after its
// wait, and at once when its context ends.
func TestOpenGivesUpOnASilentServer(t *testing.T) {
	for _, d := range []string{"mysql", "postgres"} {
		t.Run(d, func(t *testing.T) {
			proxy, through := testenv.ProxyDSN(t, testenv.DSN(t, d))
			proxy.BlackHole()
			dsn, err := ParseDSN(through)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name    string
				wait    time.Duration
				ctxTime time.Duration
			}{{"wait ends", time.Second, time.Minute}, {"context ends", time.Minute, time.Second}} {
				t.Run(tc.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), tc.ctxTime)
					defer cancel()
					done := make(chan error, 1)
					start := time.Now()
					go func() {
						db, err := Open(ctx, dsn, tc.wait, nil)
						if err == nil {
							_ = Close(db)
						}
						done <- err
					}()
					select {
					case err := <-done:
						if err == nil {
							t.Fatal("Open succeeded against a silent server")
						}
						t.Logf("gave up after %s: %v", time.Since(start).Round(time.Millisecond), err)
					case <-time.After(20 * time.Second):
						t.Fatal("Open still waits for a silent server after 20s")
					}
				})
			}
		})
	}
}
