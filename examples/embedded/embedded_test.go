package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/metrics"
	"github.com/leasecron/leasecron/pkg/model"
)

// binary is this example, built once by TestMain.
var binary string

func TestMain(m *testing.M) { testenv.MainWithPackage(m, "./examples/embedded", &binary) }

// TestThreeCopiesKillTheLeader runs three copies of the service on one lock
// file and one database and SIGKILLs the leader twice: once with a standby
// ready (it takes over at once), once with the last standby frozen for a few
// seconds (thawed, it leads and catches up the slots nobody ran). Then it
// stops the last copy with SIGTERM and checks from the database that every
// slot of tally counted exactly once and none was lost.
func TestThreeCopiesKillTheLeader(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) { threeCopies(t, dialect) })
	}
}

// follower waits on a fleet's events and notes, on the way, each copy's HTTP
// address and which copies led.
type follower struct {
	f    *testenv.Fleet
	addr map[string]string
	led  map[string]bool
}

func (w *follower) await(timeout time.Duration, what string, ok func(testenv.Event) bool) testenv.Event {
	return w.f.Await(timeout, what, func(e testenv.Event) bool {
		switch e.Msg {
		case "http server listening":
			w.addr[e.Proc] = fmt.Sprint(e.Attrs["addr"])
		case "leading":
			w.led[e.Proc] = true
		}
		return ok(e)
	})
}

func isLeading(e testenv.Event) bool { return e.Msg == "leading" }

func isTallySlot(e testenv.Event) bool { return e.Msg == "slot succeeded" && e.Attrs["job"] == "tally" }

func slotOf(t *testing.T, e testenv.Event) time.Time {
	t.Helper()
	s, err := time.Parse(time.RFC3339, fmt.Sprint(e.Attrs["slot"]))
	if err != nil {
		t.Fatalf("slot attr of %q: %v", e.Msg, err)
	}
	return s
}

func threeCopies(t *testing.T, dialect string) {
	dsn := testenv.DSN(t, dialect)
	f := testenv.NewFleet(t, binary)
	w := &follower{f: f, addr: map[string]string{}, led: map[string]bool{}}
	args := []string{"-addr", "127.0.0.1:0", "-dsn", dsn, "-lock-file", filepath.Join(t.TempDir(), "embedded.lock")}
	names := []string{"p1", "p2", "p3"}
	for _, n := range names {
		f.Start(n, append(args, "-identity", n)...)
	}
	signal := func(name string, sig syscall.Signal) {
		t.Helper()
		if err := f.Procs()[name].Cmd.Process.Signal(sig); err != nil {
			t.Fatalf("%s to %s: %v", sig, name, err)
		}
	}
	// killed copies' last lines may arrive after their successor's first:
	// they are history, not a second leader.
	killed := map[string]bool{}
	// slotsAfter waits for leader's first tally slot after t0, failing if
	// another live copy leads or runs a slot meanwhile; seen, if set, sees
	// every slot of leader.
	slotsAfter := func(leader string, t0 time.Time, seen func(slot time.Time)) {
		t.Helper()
		w.await(20*time.Second, leader+"'s slots after "+t0.Format(time.TimeOnly), func(e testenv.Event) bool {
			if e.Proc != leader && !killed[e.Proc] && (isLeading(e) || isTallySlot(e)) {
				t.Fatalf("%s: %q while %s leads", e.Proc, e.Msg, leader)
			}
			if !isTallySlot(e) || e.Proc != leader {
				return false
			}
			if seen != nil {
				seen(slotOf(t, e))
			}
			return slotOf(t, e).After(t0)
		})
	}

	first := w.await(60*time.Second, "a leader", isLeading)
	slotsAfter(first.Proc, first.At.Add(2*time.Second), nil) // three slots or so
	if got := getTally(t, w.addr[first.Proc]); got.N < 3 || got.N != got.Slots {
		t.Errorf("GET /tally on the leader = %+v, want n = slots >= 3", got)
	}

	// 1. SIGKILL the leader: a standby takes the lock within milliseconds,
	// takes over any slot the dead one left running, and runs on.
	killedAt := time.Now()
	signal(first.Proc, syscall.SIGKILL)
	killed[first.Proc] = true
	second := w.await(20*time.Second, "a new leader", isLeading)
	if second.Proc == first.Proc {
		t.Fatalf("killed copy %s leads again", first.Proc)
	}
	t.Logf("%s: %s took over %s after SIGKILL of %s", dialect, second.Proc, second.At.Sub(killedAt).Round(time.Millisecond), first.Proc)
	slotsAfter(second.Proc, killedAt.Add(2*time.Second), nil)

	// 2. Freeze the last standby and SIGKILL the leader: for a few seconds
	// nobody leads, and the standby, thawed, must catch those slots up.
	var third string
	for _, n := range names {
		if n != first.Proc && n != second.Proc {
			third = n
		}
	}
	signal(third, syscall.SIGSTOP)
	signal(second.Proc, syscall.SIGKILL)
	killed[second.Proc] = true
	<-f.Procs()[second.Proc].Done
	const leaderless = 3 * time.Second
	time.Sleep(leaderless) // the leaderless stretch itself, not a wait for an event
	thawed := time.Now()
	signal(third, syscall.SIGCONT)
	e := w.await(20*time.Second, third+" to lead", isLeading)
	if e.Proc != third {
		t.Fatalf("%s leads, want %s", e.Proc, third)
	}
	// Slots before the leader's own "leading" line had passed unrun.
	leadAt, err := time.Parse(time.RFC3339Nano, fmt.Sprint(e.Attrs["time"]))
	if err != nil {
		t.Fatalf("time of %s's %q: %v", e.Proc, e.Msg, err)
	}
	caughtUp := 0
	slotsAfter(third, thawed.Add(2*time.Second), func(slot time.Time) {
		if slot.Before(leadAt) {
			caughtUp++
		}
	})
	if caughtUp < 2 {
		t.Errorf("%s caught up %d slots after %s without a leader, want at least 2", third, caughtUp, leaderless)
	}
	t.Logf("%s: %s caught up %d slots after %s without a leader", dialect, third, caughtUp, leaderless)
	checkHTTP(t, w.addr[third], caughtUp)

	signal(third, syscall.SIGTERM)
	for _, p := range f.Procs() {
		<-p.Done
	}
	if c := f.Procs()[third].Cmd.ProcessState.ExitCode(); c != 0 {
		t.Errorf("%s exited %d after SIGTERM, want 0", third, c)
	}
	if lines := f.NotJSON(); len(lines) > 0 {
		t.Errorf("lines on stderr that are not JSON: %q", lines)
	}
	if len(w.led) != 3 {
		t.Errorf("copies that led: %v, want all three", w.led)
	}
	checkExactlyOnce(t, dsn, 3)
}

type tallyJSON struct {
	N     int64 `json:"n"`
	Slots int64 `json:"slots"`
}

func get(t *testing.T, url string) *http.Response {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return resp
}

func getTally(t *testing.T, addr string) tallyJSON {
	t.Helper()
	var out tallyJSON
	if err := json.NewDecoder(get(t, "http://"+addr+"/tally").Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkHTTP checks the leader's endpoints: its tally, its health, and that
// its metrics say it leads and count the slots it ran and the caughtUp ones.
func checkHTTP(t *testing.T, addr string, caughtUp int) {
	t.Helper()
	if got := getTally(t, addr); got.N < 4 || got.N != got.Slots {
		t.Errorf("GET /tally on the new leader = %+v, want n = slots >= 4", got)
	}
	get(t, "http://"+addr+"/healthz")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fams, err := testenv.ScrapeMetrics(ctx, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if g := fams["leasecron_leader"].GetMetric(); len(g) != 1 || g[0].GetGauge().GetValue() != 1 {
		t.Errorf("leasecron_leader of the new leader = %v, want 1", g)
	}
	succeeded, caught := 0.0, 0.0
	for _, m := range fams["leasecron_job_slots_total"].GetMetric() {
		job, _ := testenv.LabelValue(m, metrics.JobLabel)
		result, _ := testenv.LabelValue(m, "result")
		if job == "tally" && result == metrics.ResultSucceeded {
			succeeded = m.GetCounter().GetValue()
		}
	}
	for _, m := range fams["leasecron_caught_up_slots_total"].GetMetric() {
		if job, _ := testenv.LabelValue(m, metrics.JobLabel); job == "tally" {
			caught = m.GetCounter().GetValue()
		}
	}
	if succeeded < float64(caughtUp)+1 {
		t.Errorf("leasecron_job_slots_total{%s=\"tally\",result=\"succeeded\"} = %v, want >= %d", metrics.JobLabel, succeeded, caughtUp+1)
	}
	// The engine counts from its loop's start, a moment after "leading":
	// a slot may fall between the two.
	if caught < float64(caughtUp) || caught > float64(caughtUp)+1 {
		t.Errorf("leasecron_caught_up_slots_total{%s=\"tally\"} = %v, want %d or %d", metrics.JobLabel, caught, caughtUp, caughtUp+1)
	}
}

// checkExactlyOnce reads the database after the run: the counter, the rows
// of tally_slots and tally's succeeded ledger rows agree one for one, no
// slot was counted twice, and no second between the first and the last slot
// went uncounted.
func checkExactlyOnce(t *testing.T, raw string, leaders int) {
	t.Helper()
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := model.Open(ctx, dsn, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close(db)
	db = db.WithContext(ctx)

	var c counter
	if err := db.Take(&c, 1).Error; err != nil {
		t.Fatal(err)
	}
	var rows []slotRow
	if err := db.Order("slot").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	var runs []jobs.JobRun
	if err := db.Where("job = ?", "tally").Order("slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	if len(runs) < 6 {
		t.Fatalf("only %d tally slots in the ledger", len(runs))
	}
	if c.N != int64(len(rows)) || len(rows) != len(runs) {
		t.Errorf("tallies.n = %d, tally_slots has %d rows, the ledger %d tally rows: want all equal", c.N, len(rows), len(runs))
	}

	counted := map[int64]int{} // by Unix second: slots are whole seconds
	for _, r := range rows {
		counted[r.Slot.Unix()]++
	}
	for s, n := range counted {
		if n != 1 {
			t.Errorf("slot %s counted %d times", time.Unix(s, 0).UTC().Format(time.RFC3339), n)
		}
	}
	holders := map[string]int{}
	for i, r := range runs {
		holders[r.Holder]++
		if r.Status != jobs.StatusSucceeded {
			t.Errorf("ledger: slot %s is %s (%s)", r.Slot.UTC().Format(time.RFC3339), r.Status, r.Error)
		}
		if counted[r.Slot.Unix()] == 0 {
			t.Errorf("ledger: slot %s succeeded but is not in tally_slots", r.Slot.UTC().Format(time.RFC3339))
		}
		if i > 0 {
			if gap := r.Slot.Sub(runs[i-1].Slot); gap != time.Second {
				t.Errorf("ledger: slots %s and %s are %s apart: a slot was lost", runs[i-1].Slot.UTC().Format(time.RFC3339), r.Slot.UTC().Format(time.RFC3339), gap)
			}
		}
	}
	if len(holders) != leaders {
		t.Errorf("ledger holders of tally's slots: %v, want %d copies", holders, leaders)
	}
	t.Logf("%d tally slots from %s to %s, each counted once; holders %v",
		len(runs), runs[0].Slot.UTC().Format(time.TimeOnly), runs[len(runs)-1].Slot.UTC().Format(time.TimeOnly), holders)
}
