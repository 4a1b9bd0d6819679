// Package crd tests the ScheduledJob CRD of charts/leasecron/crds on a real
// kube-apiserver (etcd and kube-apiserver from internal/testenv/kube, the
// real kubectl): it becomes Established; a job of each kind is accepted and
// stored as sent (nothing pruned); what the schema refuses is refused with
// its message; every job the API server refuses is refused by pkg/spec's
// loader too, and every job the loader accepts is accepted by the API server
// (the schema never refuses what the controller runs); `kubectl get
// scheduledjobs` prints the printer columns; status is a subresource.
//
// It is a package of its own, not part of test/e2e: that suite's TestMain
// builds the leasecron binary and its cluster runs kube-controller-manager,
// a pod runner and MariaDB, none of which a CRD needs; this one starts in a
// few seconds. It needs the tools of hack/tools/build.sh (make tools).
package crd
