package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasecron/leasecron/internal/testenv"
	"github.com/leasecron/leasecron/internal/testenv/kube"
	"github.com/leasecron/leasecron/internal/testenv/testdb"
	"github.com/leasecron/leasecron/pkg/jobs"
	"github.com/leasecron/leasecron/pkg/kubejob"
	"gorm.io/gorm"
	"k8s.io/client-go/kubernetes"
)

// The chaos run's jobs beside daily-stats, one of each kind a team defines,
// from a jobs file. Each kind's evidence is outside the ledger: the sql
// job's counter (not idempotent), the receiver's deliveries, the command's
// file of keys, the batch Jobs.
const (
	kindSQL     = "chaos-sql"
	kindHTTP    = "chaos-http"
	kindCommand = "chaos-command"
	kindKube    = "chaos-kube"
	// kubeEvery is the kubernetesJob's period: each slot is a Job whose Pod
	// the pod runner runs, and the next slot waits for it.
	kubeEvery = 3 * time.Second
)

// kindsProgs are the programs the kinds run, built by TestMain:
// appendkey for the command job and slotprobe as the Pods' container.
var appendKey, slotProbe string

// kinds is the mix of kinds in one chaos run and where their evidence is.
type kinds struct {
	cp       *kube.ControlPlane
	db       *gorm.DB // the ledger's database, the test's own connection
	rc       *testenv.Receiver
	keysFile string
}

// withKinds prepares the mix (the counter, the receiver, the keys file, the
// pod runner, the jobs file) and returns the fleet's tuning that runs it.
// cp must run kube-controller-manager: a Job becomes a Pod there.
func withKinds(t *testing.T, cp *kube.ControlPlane, dsn string) (*kinds, func(*fleet)) {
	k := &kinds{cp: cp, db: testdb.Open(t, dsn), rc: testenv.NewReceiver(t, nil)}
	for _, q := range []string{
		"CREATE TABLE counters (name VARCHAR(64) PRIMARY KEY, n BIGINT NOT NULL)",
		"INSERT INTO counters (name, n) VALUES ('" + kindSQL + "', 0)",
	} {
		if err := k.db.Exec(q).Error; err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	dir := t.TempDir()
	k.keysFile = filepath.Join(dir, "keys")
	cp.StartPodRunner(t, kube.PodRunnerOptions{Images: func(ref string) (kube.Image, bool) {
		return kube.Image{Entrypoint: []string{slotProbe}}, ref == "slotprobe"
	}})
	jobsFile := filepath.Join(dir, "jobs.yaml")
	doc := fmt.Sprintf(`apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: %[1]s}
spec:
  schedule: "* * * * * *"
  sql: {statements: ["UPDATE counters SET n = n + 1 WHERE name = '%[1]s'"]}
---
apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: %[2]s}
spec:
  schedule: "* * * * * *"
  http: {url: %[5]q, body: "{{.Key}}"}
---
apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: %[3]s}
spec:
  schedule: "* * * * * *"
  command: {args: [%[6]q, %[7]q]}
---
apiVersion: leasecron.io/v1alpha1
kind: ScheduledJob
metadata: {name: %[4]s}
spec:
  schedule: "*/%[8]d * * * * *"
  kubernetesJob:
    successfulJobsHistoryLimit: 100000
    template:
      spec:
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
            containers: [{name: probe, image: slotprobe}]
`, kindSQL, kindHTTP, kindCommand, kindKube, k.rc.URL()+"/"+kindHTTP, appendKey, k.keysFile, int(kubeEvery/time.Second))
	if err := os.WriteFile(jobsFile, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return k, func(f *fleet) {
		f.args = append(f.args, "--jobs-file", jobsFile, "--allow-command-jobs", "--allow-kubernetes-jobs")
	}
}

// settled reports whether the per-second kinds have a succeeded slot after
// since: the run may stop. The kubernetesJob, whose slots wait one for
// another's Job and may still be catching up, is judged on what it ran.
func (k *kinds) settled(since time.Time) bool {
	var n int64
	err := k.db.Model(&jobs.JobRun{}).Where("job IN ? AND status = ? AND slot > ?",
		[]string{kindSQL, kindHTTP, kindCommand}, jobs.StatusSucceeded, since).
		Distinct("job").Count(&n).Error
	return err == nil && n == 3
}

// kindRow is one line of the per-kind report.
type kindRow struct {
	kind, job                string
	slots, succeeded, missed int
	inFlight                 int    // rows after the last success, not succeeded: the run stopped during them
	extra                    string // deliveries or runs beyond one per slot, with the same key
	evidence                 string
	problems                 []string
}

// report checks every kind against its own evidence and returns the rows
// of the report; problems fail the test.
func (k *kinds) report(t *testing.T, cs kubernetes.Interface) []kindRow {
	db := k.db
	rows := func(job string) []jobs.JobRun {
		var rs []jobs.JobRun
		if err := db.Where("job = ?", job).Order("slot").Find(&rs).Error; err != nil {
			t.Fatal(err)
		}
		return rs
	}
	var out []kindRow

	// sql: the counter is the number of succeeded slots, exactly.
	r := ledgerRow("sql", kindSQL, rows(kindSQL), time.Second)
	var n int64
	if err := db.Raw("SELECT n FROM counters WHERE name = ?", kindSQL).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	r.extra = "—"
	r.evidence = fmt.Sprintf("counter %d, succeeded slots %d", n, r.succeeded)
	if int(n) != r.succeeded {
		r.problems = append(r.problems, fmt.Sprintf("the counter is %d but %d slots succeeded: a slot's work ran twice or not with its mark", n, r.succeeded))
	}
	out = append(out, r)

	// http and command: every succeeded slot delivered at least once, a
	// repeat only with the slot's own key, no key that is not a slot's.
	var keys []string
	for _, d := range k.rc.Deliveries("/" + kindHTTP) {
		keys = append(keys, d.Key())
	}
	out = append(out, atLeastOnce("http", kindHTTP, rows(kindHTTP), keys, "deliveries"))
	keys = nil
	if f, err := os.Open(k.keysFile); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			keys = append(keys, sc.Text())
		}
		f.Close()
	}
	out = append(out, atLeastOnce("command", kindCommand, rows(kindCommand), keys, "runs"))

	// kubernetesJob: exactly one Job object per slot that has a row, none
	// without; a succeeded slot's Job is Complete.
	r = ledgerRow("kubernetesJob", kindKube, rows(kindKube), kubeEvery)
	list, err := cs.BatchV1().Jobs("default").List(context.Background(), metav1.ListOptions{LabelSelector: kubejob.LabelJob + "=" + kindKube})
	if err != nil {
		t.Fatal(err)
	}
	perKey := map[string][]batchv1.Job{}
	for _, j := range list.Items {
		perKey[j.Annotations[kubejob.AnnotationKey]] = append(perKey[j.Annotations[kubejob.AnnotationKey]], j)
	}
	complete := 0
	for _, row := range rows(kindKube) {
		key := jobs.SlotKey(kindKube, row.Slot)
		js := perKey[key]
		delete(perKey, key)
		switch {
		case len(js) > 1:
			r.problems = append(r.problems, fmt.Sprintf("%d Jobs for slot %s", len(js), key))
		case len(js) == 0 && row.Status == jobs.StatusSucceeded:
			r.problems = append(r.problems, "no Job for succeeded slot "+key)
		case len(js) == 1 && row.Status == jobs.StatusSucceeded:
			if !jobComplete(js[0]) {
				r.problems = append(r.problems, fmt.Sprintf("slot %s succeeded but its Job %s is not Complete", key, js[0].Name))
			}
			complete++
		}
	}
	for key := range perKey {
		r.problems = append(r.problems, "a Job for "+key+", a slot the ledger has no row of")
	}
	r.extra = "—"
	r.evidence = fmt.Sprintf("%d Jobs, %d Complete for the %d succeeded slots", len(list.Items), complete, r.succeeded)
	out = append(out, r)
	return out
}

func jobComplete(j batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// ledgerRow counts a job's slots from its first row to its last success,
// every period: a slot with no succeeded row in that range is missed. Rows
// after the last success are in flight when the run stopped.
func ledgerRow(kind, job string, rs []jobs.JobRun, period time.Duration) kindRow {
	r := kindRow{kind: kind, job: job}
	if len(rs) == 0 {
		r.problems = append(r.problems, "no slot ran at all")
		return r
	}
	ok := map[int64]bool{}
	var last time.Time
	for _, row := range rs {
		if row.Status == jobs.StatusSucceeded {
			ok[row.Slot.UnixNano()] = true
			last = row.Slot
		}
	}
	var missed []string
	for s := rs[0].Slot; !s.After(last); s = s.Add(period) {
		r.slots++
		if ok[s.UnixNano()] {
			r.succeeded++
		} else {
			missed = append(missed, s.UTC().Format(time.TimeOnly))
		}
	}
	for _, row := range rs {
		if row.Slot.After(last) {
			r.inFlight++
		}
	}
	r.missed = len(missed)
	if len(missed) > 0 {
		r.problems = append(r.problems, "slots missed: "+strings.Join(missed, ", "))
	}
	return r
}

// atLeastOnce checks a kind that promises at-least-once with one key per
// slot: keys are what the outside saw, one per delivery or run.
func atLeastOnce(kind, job string, rs []jobs.JobRun, keys []string, what string) kindRow {
	r := ledgerRow(kind, job, rs, time.Second)
	per := map[string]int{}
	for _, k := range keys {
		per[k]++
	}
	slotKeys := map[string]bool{}
	for _, row := range rs {
		key := jobs.SlotKey(job, row.Slot)
		slotKeys[key] = true
		if row.Status == jobs.StatusSucceeded && per[key] == 0 {
			r.problems = append(r.problems, "succeeded slot "+key+" never reached the outside")
		}
	}
	var stray []string
	repeats, repeated := 0, 0
	for k, n := range per {
		if !slotKeys[k] {
			stray = append(stray, k)
		}
		if n > 1 {
			repeats += n - 1
			repeated++
		}
	}
	sort.Strings(stray)
	if len(stray) > 0 {
		r.problems = append(r.problems, "keys that are no slot's: "+strings.Join(stray, ", "))
	}
	r.extra = fmt.Sprintf("%d (%d slots)", repeats, repeated)
	r.evidence = fmt.Sprintf("%d %s for %d keys", len(keys), what, len(per))
	return r
}

// kindsTable prints the per-kind report.
func kindsTable(rows []kindRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-14s %-14s %6s %9s %6s %9s  %-18s %s\n", "kind", "job", "slots", "succeeded", "missed", "in flight", "repeats, same key", "evidence")
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-14s %-14s %6d %9d %6d %9d  %-18s %s\n", r.kind, r.job, r.slots, r.succeeded, r.missed, r.inFlight, r.extra, r.evidence)
	}
	return strings.TrimRight(b.String(), "\n")
}
