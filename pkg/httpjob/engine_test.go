package httpjob_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/spec"
)

func forEachDialect(t *testing.T, f func(t *testing.T, dialect string)) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) { f(t, d) })
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A slot is delivered once, with its key, and with the slot's own values
// in url, query, headers and body; the header from a file arrives with its
// prefix; the ledger records the slot succeeded.
func TestDeliversOncePerSlot(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		rc := newReceiver(t, nil)
		token := writeFile(t, "file-token\n")
		e := newEngine(t, dialect, newJob(&spec.HTTP{
			URL: rc.URL() + "/hooks/{{.Job}}?slot={{urlquery .Slot}}&prev={{urlquery .PrevSlot}}&date={{.SlotDate}}",
			Headers: map[string]string{
				"Content-Type": "application/json",
				"X-Slot-Date":  "{{.SlotDate}}",
			},
			HeadersFrom: []spec.HeaderFrom{{Name: "Authorization", File: token, Prefix: "Bearer "}},
			Body:        `{"key":"{{.Key}}","slot":"{{.Slot}}","job":"{{.Job}}"}`,
		}))
		out, err := e.run(t)
		if err != nil || out != jobs.Succeeded {
			t.Fatalf("RunSlot = %v, %v; want succeeded (log: %s)", out, err, e.log)
		}
		ds := rc.Deliveries()
		if len(ds) != 1 {
			t.Fatalf("receiver saw %d deliveries, want 1", len(ds))
		}
		d := ds[0]
		checks := []struct{ what, got, want string }{
			{"method", d.Method, http.MethodPost},
			{"path", d.Path, "/hooks/hook"},
			{"query slot", d.Query.Get("slot"), "2026-03-09T23:30:00Z"},
			{"query prev", d.Query.Get("prev"), "2026-03-08T23:30:00Z"},
			{"query date", d.Query.Get("date"), slotDate},
			{"Idempotency-Key", d.Header.Get("Idempotency-Key"), jobs.SlotKey(jobName, slot)},
			{"X-Slot-Date", d.Header.Get("X-Slot-Date"), slotDate},
			{"Content-Type", d.Header.Get("Content-Type"), "application/json"},
			{"Authorization", d.Header.Get("Authorization"), "Bearer file-token"},
			{"body", d.Body, `{"key":"hook@2026-03-09T23:30:00Z","slot":"2026-03-09T23:30:00Z","job":"hook"}`},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
			}
		}
		if row := onlyRow(t, e.db); row.Status != jobs.StatusSucceeded || row.Error != "" {
			t.Fatalf("ledger row = %s %q, want succeeded", row.Status, row.Error)
		}
		// The slot is done: running it again delivers nothing.
		if out, err := e.run(t); err != nil || out != jobs.Skipped {
			t.Fatalf("second RunSlot = %v, %v; want skipped", out, err)
		}
		if n := len(rc.Deliveries()); n != 1 {
			t.Fatalf("receiver saw %d deliveries after the slot was done, want 1", n)
		}
	})
}

// A receiver that fails twice sees three deliveries of the slot, all with
// the same key, and the ledger holds one succeeded row.
func TestRetriesCarryTheSameKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
			if n <= 2 {
				http.Error(w, "not yet", http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
		sj := newJob(&spec.HTTP{URL: rc.URL() + "/hook"})
		sj.Spec.Retries = &spec.Retries{Limit: ptr(int32(5)), Backoff: &spec.Backoff{Initial: dur(time.Millisecond), Max: dur(4 * time.Millisecond)}}
		e := newEngine(t, dialect, sj)
		if out, err := e.run(t); err != nil || out != jobs.Succeeded {
			t.Fatalf("RunSlot = %v, %v; want succeeded (log: %s)", out, err, e.log)
		}
		ds := rc.Deliveries()
		if got := perKey(ds); len(ds) != 3 || got[slotKey] != 3 {
			t.Fatalf("deliveries per key = %v (%d in all), want 3 with %q", got, len(ds), slotKey)
		}
		for _, d := range ds {
			if _, set := d.Header["Content-Type"]; set || d.Body != "" {
				t.Fatalf("delivery has Content-Type %q and body %q, want neither (none was set)", d.Header.Get("Content-Type"), d.Body)
			}
		}
		row := onlyRow(t, e.db)
		if row.Status != jobs.StatusSucceeded || row.Attempts != 3 {
			t.Fatalf("ledger row = %s after %d attempts, want succeeded after 3", row.Status, row.Attempts)
		}
	})
}

// A failure is recorded with the status and the start of the receiver's
// answer, but without any header value (from headers or headersFrom), the
// URL's userinfo or its query, in the ledger and in the log.
func TestFailureIsRecordedRedacted(t *testing.T) {
	const (
		fileSecret   = "file-secret-7f3a"
		headerSecret = "header-secret-91c2"
		envSecret    = "env-secret-0d5e"
		userSecret   = "user-secret-pw"
		querySecret  = "query-secret-q"
	)
	forEachDialect(t, func(t *testing.T, dialect string) {
		rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "receiver saw Authorization=%q X-Api-Key=%s X-Env=%s token=%s (raw file value %s) user=%s",
				r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get("X-Env"),
				r.URL.Query().Get("token"), fileSecret, userSecret)
		})
		token := writeFile(t, fileSecret+"\n")
		u := strings.Replace(rc.URL(), "http://", "http://robot:"+userSecret+"@", 1) + "/fail?token=" + querySecret
		sj := newJob(&spec.HTTP{
			URL:         u,
			Headers:     map[string]string{"X-Api-Key": headerSecret},
			HeadersFrom: []spec.HeaderFrom{{Name: "Authorization", File: token, Prefix: "Bearer "}, {Name: "X-Env", Env: "HTTPJOB_TEST_SECRET"}},
		})
		e := &engine{db: openDB(t, dialect), log: &strings.Builder{}}
		e.def = definition(t, sj, spec.Env{LookupEnv: lookup(map[string]string{"HTTPJOB_TEST_SECRET": envSecret})})
		e.sched = newScheduler(t, e.db, "holder", e.def, e.log)
		f, err := e.sched.Ledger().BeginTerm(context.Background(), "test")
		if err != nil {
			t.Fatal(err)
		}
		e.fence = f

		if out, err := e.run(t); err != nil || out != jobs.Failed {
			t.Fatalf("RunSlot = %v, %v; want failed", out, err)
		}
		if n := len(rc.Deliveries()); n != 1 {
			t.Fatalf("receiver saw %d deliveries, want 1 (retries.limit 1)", n)
		}
		row := onlyRow(t, e.db)
		if row.Status != jobs.StatusFailed {
			t.Fatalf("ledger row = %s, want failed", row.Status)
		}
		wantStart := "POST " + rc.URL() + "/fail: status 500 Internal Server Error: receiver saw Authorization="
		if !strings.HasPrefix(row.Error, wantStart) {
			t.Fatalf("ledger error = %q, want it to start with %q", row.Error, wantStart)
		}
		if !strings.Contains(row.Error, "[redacted]") {
			t.Fatalf("ledger error = %q, want the secrets [redacted]", row.Error)
		}
		for _, secret := range []string{fileSecret, headerSecret, envSecret, userSecret, querySecret} {
			if strings.Contains(row.Error, secret) {
				t.Errorf("ledger error shows %q: %q", secret, row.Error)
			}
			if strings.Contains(e.log.String(), secret) {
				t.Errorf("log shows %q: %s", secret, e.log)
			}
		}
	})
}

// Of a long error body the ledger keeps the first KiB at most, cut between
// characters, so the row is valid text on every dialect. Three bodies whose
// 3-byte characters start one byte apart: wherever the text is cut, one of
// them would be cut inside a character.
func TestFailureKeepsTheFirstKiB(t *testing.T) {
	prefixes := []string{"start:", "start:x", "start:xx"}
	forEachDialect(t, func(t *testing.T, dialect string) {
		rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, prefixes[(n-1)%len(prefixes)]+strings.Repeat("€", 1750)) // > 5 KiB
		})
		e := newEngine(t, dialect, newJob(&spec.HTTP{URL: rc.URL() + "/busy"}))
		for i, p := range prefixes {
			at := slot.AddDate(0, 0, i)
			if out, err := e.runAt(t, at); err != nil || out != jobs.Failed {
				t.Fatalf("RunSlot %s = %v, %v; want failed", at, out, err)
			}
			rs := rows(t, e.db)
			if len(rs) != i+1 {
				t.Fatalf("ledger has %d rows, want %d", len(rs), i+1)
			}
			row := rs[i]
			if row.Status != jobs.StatusFailed {
				t.Fatalf("body %q: ledger row = %s, want failed (log: %s)", p, row.Status, e.log)
			}
			head := "POST " + rc.URL() + "/busy: status 503 Service Unavailable: " + p + "€€"
			if !strings.HasPrefix(row.Error, head) {
				t.Fatalf("ledger error starts %.120q, want %q", row.Error, head)
			}
			if len(row.Error) > 1024 || !utf8.ValidString(row.Error) {
				t.Fatalf("ledger error is %d bytes (valid UTF-8: %v), want at most 1024 of valid UTF-8", len(row.Error), utf8.ValidString(row.Error))
			}
			if n := strings.Count(row.Error, "€"); n < 250 {
				t.Fatalf("ledger error keeps %d characters of the body, want most of a KiB", n)
			}
		}
	})
}

// A redirect is the answer unless followRedirects: its target sees nothing
// and the slot fails; with followRedirects the target gets the delivery,
// with the key, and the slot succeeds.
func TestRedirects(t *testing.T) {
	redirecting := func(w http.ResponseWriter, r *http.Request, _ int) {
		if r.URL.Path == "/start" {
			http.Redirect(w, r, "/target?sig=redirect-secret", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
	forEachDialect(t, func(t *testing.T, dialect string) {
		t.Run("not followed", func(t *testing.T) {
			rc := newReceiver(t, redirecting)
			e := newEngine(t, dialect, newJob(&spec.HTTP{URL: rc.URL() + "/start"}))
			if out, err := e.run(t); err != nil || out != jobs.Failed {
				t.Fatalf("RunSlot = %v, %v; want failed", out, err)
			}
			if n := len(rc.Deliveries("/target")); n != 0 {
				t.Fatalf("the redirect's target saw %d deliveries, want none", n)
			}
			row := onlyRow(t, e.db)
			if row.Status != jobs.StatusFailed || !strings.Contains(row.Error, "status 302 Found") ||
				!strings.Contains(row.Error, "redirect to "+rc.URL()+"/target not followed") || strings.Contains(row.Error, "redirect-secret") {
				t.Fatalf("ledger row = %s %q, want failed with status 302 and the target without its query", row.Status, row.Error)
			}
		})
		t.Run("followed", func(t *testing.T) {
			rc := newReceiver(t, redirecting)
			e := newEngine(t, dialect, newJob(&spec.HTTP{URL: rc.URL() + "/start", FollowRedirects: true}))
			if out, err := e.run(t); err != nil || out != jobs.Succeeded {
				t.Fatalf("RunSlot = %v, %v; want succeeded (log: %s)", out, err, e.log)
			}
			ds := rc.Deliveries("/target")
			if len(ds) != 1 || ds[0].Header.Get("Idempotency-Key") != slotKey {
				t.Fatalf("the redirect's target saw %v, want one delivery with key %q", perKey(ds), slotKey)
			}
			if row := onlyRow(t, e.db); row.Status != jobs.StatusSucceeded {
				t.Fatalf("ledger row = %s %q, want succeeded", row.Status, row.Error)
			}
		})
	})
}

// successCodes replace the default 2xx: with [202], a 200 is a failure.
func TestSuccessCodes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		rc := newReceiver(t, answer(http.StatusOK, "ok"))
		e := newEngine(t, dialect, newJob(&spec.HTTP{URL: rc.URL() + "/accept", SuccessCodes: []int32{202}}))
		if out, err := e.run(t); err != nil || out != jobs.Failed {
			t.Fatalf("RunSlot = %v, %v; want failed", out, err)
		}
		if row := onlyRow(t, e.db); row.Status != jobs.StatusFailed || !strings.Contains(row.Error, "status 200 OK: ok") {
			t.Fatalf("ledger row = %s %q, want failed with status 200", row.Status, row.Error)
		}

		rc2 := newReceiver(t, answer(http.StatusAccepted, ""))
		e2 := newEngine(t, dialect, newJob(&spec.HTTP{URL: rc2.URL() + "/accept", SuccessCodes: []int32{202}}))
		if out, err := e2.run(t); err != nil || out != jobs.Succeeded {
			t.Fatalf("RunSlot with a 202 = %v, %v; want succeeded", out, err)
		}
	})
}

// A new leader that arrives while the request is in flight fences the old
// one: its delivery is not recorded, and the new leader delivers the slot
// again with the same key and records it once.
func TestFencedDeliveryIsNotRecorded(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		db := openDB(t, dialect)
		next := make(chan jobs.Fence, 1)
		rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 1 { // a new leader arrives while this request is in flight
				f, err := jobs.NewLedger(db, "next").BeginTerm(r.Context(), "test")
				if err != nil {
					t.Errorf("new leader's BeginTerm: %v", err)
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				next <- f
			}
			w.WriteHeader(http.StatusOK)
		})
		def := definition(t, newJob(&spec.HTTP{URL: rc.URL() + "/hook"}), spec.Env{})
		var log strings.Builder
		old := newScheduler(t, db, "holder", def, &log)
		fence, err := old.Ledger().BeginTerm(context.Background(), "test")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := old.RunSlot(ctx, fence, jobName, slot, time.Now().Add(time.Minute))
		if !errors.Is(err, jobs.ErrFenced) || out != jobs.Failed {
			t.Fatalf("old leader's RunSlot = %v, %v; want failed with ErrFenced", out, err)
		}
		if row := onlyRow(t, db); row.Status == jobs.StatusSucceeded {
			t.Fatal("the fenced leader's delivery was recorded as succeeded")
		}

		var f2 jobs.Fence
		select {
		case f2 = <-next:
		default:
			t.Fatal("the receiver did not start a new term")
		}
		s2 := newScheduler(t, db, "next", def, &log)
		if out, err := s2.RunSlot(ctx, f2, jobName, slot, time.Now().Add(time.Minute)); err != nil || out != jobs.Succeeded {
			t.Fatalf("new leader's RunSlot = %v, %v; want succeeded (log: %s)", out, err, &log)
		}
		ds := rc.Deliveries()
		if got := perKey(ds); len(ds) != 2 || got[slotKey] != 2 {
			t.Fatalf("deliveries per key = %v (%d in all), want 2 with %q", got, len(ds), slotKey)
		}
		row := onlyRow(t, db)
		if row.Status != jobs.StatusSucceeded || row.Holder != "next" || row.Fence != f2.Term {
			t.Fatalf("ledger row = %s by %s under term %d, want succeeded by next under term %d", row.Status, row.Holder, row.Fence, f2.Term)
		}
	})
}
