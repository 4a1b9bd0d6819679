// Package chaos runs five leasecron replicas in lease mode against a real
// kube-apiserver and a real MariaDB under a per-second schedule, and hurts
// the leader at random: SIGKILL, SIGTERM, or SIGSTOP for longer than the lease
// duration followed by SIGCONT (a frozen leader that wakes up believing it
// still leads). A supervisor restarts every replica that exits, as a kubelet
// would. Afterwards it prints a report (slots expected, run once, run twice,
// missed) and fails unless no slot ran twice and none was missed.
//
// "Run" is judged twice over: by the ledger (one succeeded row per slot) and
// by the processes' own logs (a "slot succeeded" line from two processes for
// one slot would be a double run that the ledger's unique key hid), and the
// statistics tables must hold one row per date.
//
// TestChaos runs, beside daily-stats, one job of each kind a team defines,
// from a jobs file, and judges each by evidence outside the ledger: an sql
// job whose counter is not idempotent (it must equal the succeeded slots),
// an http job to a receiver of the test's and a command job that appends
// its slot's key to a file (every succeeded slot seen at least once, a
// repeat only with the slot's own key), and a kubernetesJob every 3 s whose
// Pods the pod runner runs (exactly one Job object per slot). Its report
// has a row per kind.
//
// The run lasts LEASECRON_CHAOS_DURATION (default 40s, as in make test; make
// chaos runs it for 5m). The random faults come from a seed that is logged,
// and LEASECRON_CHAOS_SEED replays one.
package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/pkg/dailystats"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/model"
)

const (
	replicas      = 5
	leaseName     = "chaos"
	leaseDuration = 3 * time.Second
	renewDeadline = 2 * time.Second
	freeze        = leaseDuration + 2*time.Second // SIGSTOP for longer than the lease
)

var binary string

func TestMain(m *testing.M) {
	testenv.MainWithLeasecron(m, &binary,
		testenv.Also{Pkg: "./internal/testenv/cmd/appendkey", Path: &appendKey},
		testenv.Also{Pkg: "./internal/testenv/cmd/slotprobe", Path: &slotProbe})
}

// replica is one replica slot: the supervisor keeps a process running in it.
type replica struct {
	id   string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int // how many processes this slot has had
}

// fleet supervises the replicas and collects every "slot succeeded" line.
type fleet struct {
	t        *testing.T
	client   kubernetes.Interface
	replicas int
	args     []string
	dsnOf    map[string]string // a replica's own --database-dsn, if it has one
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	slots    map[int64][]string // unix second → processes that logged it succeeded
	events   []logged           // every "slot succeeded" and "leading" line
	exits    map[int]int        // exit code → count
	why      []string           // why each process that failed did
	logTail  []string
}

func (f *fleet) supervise(r *replica) {
	defer f.wg.Done()
	for {
		select {
		case <-f.stop:
			return
		default:
		}
		r.mu.Lock()
		r.runs++
		name := fmt.Sprintf("%s#%d", r.id, r.runs)
		args := append(slices.Clone(f.args), "--identity", r.id)
		if dsn, ok := f.dsnOf[r.id]; ok {
			args = append(args, "--database-dsn", dsn) // the last one given counts
		}
		cmd := exec.Command(binary, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stderr, err := cmd.StderrPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			r.mu.Unlock()
			f.t.Errorf("start %s: %v", name, err)
			return
		}
		r.cmd, r.done = cmd, make(chan struct{})
		done := r.done
		r.mu.Unlock()
		lastErr := f.read(name, stderr)
		_ = cmd.Wait() // the exit code is what matters, and it is recorded
		close(done)
		code := cmd.ProcessState.ExitCode()
		f.mu.Lock()
		f.exits[code]++
		if code > 0 {
			f.why = append(f.why, fmt.Sprintf("%s exited %d: %s", name, code, lastErr))
		}
		f.mu.Unlock()
	}
}

// read follows one process's log until it ends and returns its last error
// line.
func (f *fleet) read(name string, stderr interface{ Read([]byte) (int, error) }) (lastErr string) {
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var e struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
			Err   string    `json:"err"`
			Job   string    `json:"job"`
			Slot  string    `json:"slot"`
		}
		line := sc.Text()
		f.mu.Lock()
		f.logTail = append(f.logTail, name+": "+line)
		if len(f.logTail) > 400 {
			f.logTail = f.logTail[len(f.logTail)-300:]
		}
		f.mu.Unlock()
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e.Level == "ERROR" {
			lastErr = e.Msg + ": " + e.Err
		}
		if e.Msg == "leading" {
			f.mu.Lock()
			f.events = append(f.events, logged{name, e.Msg, e.Time})
			f.mu.Unlock()
		}
		if e.Msg != "slot succeeded" || e.Job != dailystats.Name {
			continue // the other kinds have evidence of their own
		}
		at, err := time.Parse(time.RFC3339, e.Slot)
		if err != nil {
			continue
		}
		f.mu.Lock()
		f.slots[at.Unix()] = append(f.slots[at.Unix()], name)
		f.events = append(f.events, logged{name, e.Msg, e.Time})
		f.mu.Unlock()
	}
	return lastErr
}

// logged is one log line of interest: when the process wrote it.
type logged struct {
	proc, msg string
	at        time.Time
}

// signal sends sig to the process currently in r, if any.
func (r *replica) signal(sig syscall.Signal) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.cmd.ProcessState != nil {
		return false
	}
	return r.cmd.Process.Signal(sig) == nil
}

func chaosDuration(t *testing.T) time.Duration {
	v := os.Getenv("LEASECRON_CHAOS_DURATION")
	if v == "" {
		return 40 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("LEASECRON_CHAOS_DURATION=%q is not a positive duration such as 5m", v)
	}
	return d
}

func TestChaos(t *testing.T) {
	duration := chaosDuration(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("LEASECRON_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LEASECRON_CHAOS_SEED=%q is not a number", v)
		}
		seed = s
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("chaos for %s with seed %d (replay: LEASECRON_CHAOS_SEED=%d)", duration, seed, seed)

	cp := kube.Start(t, kube.Options{ControllerManager: true}) // a Job becomes a Pod
	dsn := testenv.DSN(t, "mysql")
	k, mix := withKinds(t, cp, dsn)
	f, rs := startFleet(t, cp, dsn, replicas, mix)
	f.awaitLeader(90 * time.Second)

	faults := map[string]int{}
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		// A pause between faults: time for a new leader to settle and run.
		time.Sleep(time.Duration(2000+rng.IntN(3000)) * time.Millisecond)
		lead := rs[f.holder()]
		if lead == nil {
			continue
		}
		switch rng.IntN(3) {
		case 0:
			if lead.signal(syscall.SIGKILL) {
				faults["SIGKILL"]++
			}
		case 1:
			if lead.signal(syscall.SIGTERM) {
				faults["SIGTERM"]++
			}
		case 2:
			if lead.signal(syscall.SIGSTOP) {
				faults["SIGSTOP "+freeze.String()+" + SIGCONT"]++
				time.Sleep(freeze) // the freeze itself: longer than the lease
				lead.signal(syscall.SIGCONT)
			}
		}
	}

	f.calm(rs, func(since time.Time) bool { return k.settled(since) })
	report(t, dsn, f, faults, k)
}

// startFleet starts n supervised replicas (r1 … rn) in lease mode on cp and
// dsn, with a per-second schedule; tune, if given, adjusts the fleet before
// any replica starts. Everything is stopped in t.Cleanup.
func startFleet(t *testing.T, cp *kube.ControlPlane, dsn string, n int, tune ...func(*fleet)) (*fleet, map[string]*replica) {
	client, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{
		t: t, client: client, replicas: n, stop: make(chan struct{}), slots: map[int64][]string{}, exits: map[int]int{},
		args: []string{"run", "--mode", "lease", "--kubeconfig", cp.AdminKubeconfig(),
			"--lease-name", leaseName, "--lease-namespace", "default", "--database-dsn", dsn,
			"--schedule", "daily-stats=* * * * * *", "--timezone", "UTC", "--http-addr", "127.0.0.1:0",
			"--log-format", "json", "--lease-duration", leaseDuration.String(), "--renew-deadline", renewDeadline.String(),
			"--retry-period", "500ms", "--shutdown-grace-period", "2s"},
	}
	for _, fn := range tune {
		fn(f)
	}
	rs := map[string]*replica{}
	for i := 1; i <= n; i++ {
		r := &replica{id: fmt.Sprintf("r%d", i)}
		rs[r.id] = r
		f.wg.Add(1)
		go f.supervise(r)
	}
	t.Cleanup(func() {
		select {
		case <-f.stop:
		default:
			close(f.stop)
		}
		for _, r := range rs {
			r.signal(syscall.SIGCONT)
			r.signal(syscall.SIGKILL)
		}
		f.wg.Wait()
		if t.Failed() {
			f.mu.Lock()
			t.Logf("last log lines:\n%s", strings.Join(f.logTail, "\n"))
			f.mu.Unlock()
		}
	})
	return f, rs
}

// holder is the Lease's holder identity, "" when there is none or the API
// server does not answer.
func (f *fleet) holder() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := f.client.CoordinationV1().Leases("default").Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func (f *fleet) awaitLeader(timeout time.Duration) string {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if h := f.holder(); h != "" {
			return h
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no Lease holder within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond) // polling the Lease, not standing in for it
	}
}

// awaitSlot waits until some process logs slot at as succeeded.
func (f *fleet) awaitSlot(at time.Time, timeout time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f.mu.Lock()
		_, ran := f.slots[at.Unix()]
		f.mu.Unlock()
		if ran {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("slot %s did not run within %s", at.Format(time.TimeOnly), timeout)
		}
		time.Sleep(100 * time.Millisecond) // polling the log-fed slot map
	}
}

// calm lets a leader settle and run a few slots (and, with settled, until
// settled says the other jobs have too), then stops every replica.
func (f *fleet) calm(rs map[string]*replica, settled ...func(since time.Time) bool) {
	f.t.Helper()
	calm := time.Now()
	f.awaitLeader(60 * time.Second)
	f.awaitSlot(calm.Add(3*time.Second), 60*time.Second)
	for _, ok := range settled {
		deadline := time.Now().Add(60 * time.Second)
		for !ok(calm) {
			if time.Now().After(deadline) {
				f.t.Errorf("the jobs did not all succeed a slot within 60s of the calm")
				break
			}
			time.Sleep(200 * time.Millisecond) // polling the ledger
		}
	}
	close(f.stop)
	for _, r := range rs {
		r.signal(syscall.SIGTERM)
	}
	f.wg.Wait()
}

// report compares the ledger, the logs and the tables, prints the report and
// fails on any slot run twice or missed; with kinds, it reports and checks
// each kind against its own evidence too.
func report(t *testing.T, raw string, f *fleet, faults map[string]int, mix ...*kinds) {
	dsn, err := model.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := model.Open(ctx, dsn, 30*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close(db)
	var runs []jobs.JobRun
	if err := db.Where("job = ?", dailystats.Name).Order("slot").Find(&runs).Error; err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 {
		t.Fatal("no slot ran at all")
	}
	first, last := runs[0].Slot.UTC(), runs[len(runs)-1].Slot.UTC()
	succeeded := map[int64]bool{}
	var failed []string
	for _, r := range runs {
		if r.Status == jobs.StatusSucceeded {
			succeeded[r.Slot.Unix()] = true
		} else {
			failed = append(failed, fmt.Sprintf("%s %s (%s)", r.Slot.UTC().Format(time.TimeOnly), r.Status, r.Error))
		}
	}
	expected := int(last.Sub(first)/time.Second) + 1
	var missed, twice []string
	once := 0
	for s := first; !s.After(last); s = s.Add(time.Second) {
		by := f.slots[s.Unix()]
		switch {
		case !succeeded[s.Unix()]:
			missed = append(missed, s.Format(time.TimeOnly))
		case len(by) > 1:
			twice = append(twice, fmt.Sprintf("%s by %s", s.Format(time.TimeOnly), strings.Join(by, " and ")))
		default:
			once++
		}
	}
	var fs []string
	for k, n := range faults {
		fs = append(fs, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(fs)
	var exits []string
	for code, n := range f.exits {
		exits = append(exits, fmt.Sprintf("exit %d ×%d", code, n))
	}
	sort.Strings(exits)
	rep := fmt.Sprintf("chaos report: %d replicas, slots %s to %s\n  faults:    %s\n  processes: %s\n"+
		"  daily-stats: expected %d, run once %d, run twice %d, missed %d (not succeeded rows: %d)",
		f.replicas, first.Format(time.TimeOnly), last.Format(time.TimeOnly), strings.Join(fs, ", "), strings.Join(exits, ", "),
		expected, once, len(twice), len(missed), len(failed))
	for _, w := range f.why {
		rep += "\n  " + w
	}
	var problems []string
	for _, k := range mix {
		rows := k.report(t, f.client)
		rep += "\n  per kind (slots from each job's first row to its last success; missed = no succeeded row):\n" + kindsTable(rows)
		for _, r := range rows {
			for _, p := range r.problems {
				problems = append(problems, r.kind+": "+p)
			}
		}
	}
	fmt.Println(rep)
	t.Log(rep)
	for _, p := range problems {
		t.Error(p)
	}
	if len(twice) > 0 {
		t.Errorf("slots run twice: %s", strings.Join(twice, "; "))
	}
	if len(missed) > 0 {
		t.Errorf("slots missed: %s; ledger rows not succeeded: %s", strings.Join(missed, ", "), strings.Join(failed, "; "))
	}
	for _, s := range dailystats.Stats() {
		var dup int64
		if err := db.Raw("SELECT COUNT(*) FROM (SELECT date FROM " + s.Table + " GROUP BY date HAVING COUNT(*) > 1) d").Scan(&dup).Error; err != nil {
			t.Fatal(err)
		}
		if dup > 0 {
			t.Errorf("%s holds %d dates more than once", s.Table, dup)
		}
	}
}
