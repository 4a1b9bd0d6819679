// Package e2e is leasecron's end-to-end suite: the Helm chart installed with
// the real helm and kubectl into a real control plane (etcd, kube-apiserver,
// kube-controller-manager from internal/testenv/kube), against a real MariaDB
// (internal/testenv), with the leasecron binary built exactly as the
// Dockerfile builds it (CGO_ENABLED=0, -trimpath, version ldflags).
//
// No kubelet can run here, so kube.PodRunner plays the kubelet of one Node:
// it binds the chart's Pods to that Node and runs one leasecron process per
// Pod with the Pod's own args and env (downward API and Secret references
// resolved, the DSN Secret and jobs ConfigMap volumes materialised in the
// kubelet's atomic layout and refreshed while the Pods run, a kubeconfig
// holding a TokenRequest token of the Pod's ServiceAccount), reports the Pods
// Running/Ready from their probes, and on deletion sends SIGTERM and honours
// the grace period. Deployments, ReplicaSets, garbage collection, RBAC,
// TokenRequest and Pod Security admission are the real ones.
//
// One control plane, one pod runner and one MariaDB server serve the whole
// suite. The scenarios run one after another; each that changes the
// release (scale, delete, crash, upgrade, jobs-live) gets a release,
// namespace and database of its own. Every namespace is labelled
// pod-security.kubernetes.io/enforce=restricted, the schedule is per second
// (`* * * * * *`) and the lease timings are short (3s/2s/500ms), so a
// scenario takes seconds. After every scenario the ledger is checked
// directly in MariaDB: every job_runs row succeeded, consecutive slots
// follow the schedule of the Pod that ran the later one (no gap, and no slot
// twice, beyond the unique key), each statistics table holds exactly one row
// per date, no process logged missed slots, and every Lease holder ever
// observed was a Pod of the release that existed at the time.
//
// jobs-live runs only jobs of the chart's `jobs.items` value, from the jobs
// file (jobs.source=file; per-second http jobs to a testenv.Receiver on
// loopback) and edits them with `helm upgrade --reuse-values`: the same Pods
// keep running, both controllers log "jobs file applied", the new job
// delivers and the removed one stops, and after uninstall every delivered
// Idempotency-Key has exactly one succeeded job_runs row and one body.
//
// jobs-cluster installs with jobs.source=cluster (the chart's default, which
// the other scenarios run with no items) and two per-second http jobs in
// `jobs.items`: the chart's CRD is served, `kubectl get scheduledjobs` shows
// exactly the items with the chart's labels, one applied with kubectl runs
// beside them, and the leader writes every one's status. `kubectl auth
// can-i` as the controller's ServiceAccount is answered by the chart's Role:
// the ScheduledJobs read, their status written, nothing on Secrets, no
// change to a spec, no batch Jobs, nothing in another namespace; after
// `helm upgrade --set kubernetesJob.enabled=true` the batch Jobs verbs too.
//
// kinds applies one per-second ScheduledJob of each kind a team defines —
// sql (a counter that is not idempotent), http (to a testenv.Receiver),
// command (internal/testenv/cmd/appendkey, appending LEASECRON_KEY to a
// file), kubernetesJob (a Job whose Pod runs internal/testenv/cmd/slotprobe
// through the pod runner) — to a release with allowCommandJobs and
// kubernetesJob.enabled, and keeps them running through kubectl scale, a
// SIGKILLed leader, a leader frozen (PodRunner.Freeze) past its lease, a
// suspend and resume, a schedule edit, a trigger, the deletion of the
// kubernetesJob object and a helm upgrade. With every job suspended and no
// slot running it checks, per kind: the counter equals the succeeded slots
// and none is missing but those the suspend skipped (as many as the leader
// logged missed); every succeeded http slot delivered, duplicates only
// under its one Idempotency-Key; every succeeded command slot's key in the
// file, the triggered slot among them; exactly one batch Job per slot with
// a ledger row; no slot of the deleted object started after the leader
// removed it; the frozen leader recorded nothing after it woke; `kubectl get
// scheduledjobs` and each object's lastSuccessfulTime against the ledger.
// Its being-deleted step checks that an object held by a finalizer after
// kubectl delete starts no new slot.
//
// Timings (graceful handover, crash takeover) are logged, not asserted
// beyond generous bounds. Run it with `make e2e`; the tools come from
// `make tools` (hack/tools/build.sh) and the database servers from
// `make test-deps`. A missing tool or server fails the suite, never skips it.
package e2e
