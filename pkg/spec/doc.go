// The ScheduledJob CRD (charts/leasecron/crds) and the DeepCopy methods
// (zz_generated.deepcopy.go) are generated from the types of types.go by
// `make generate`: controller-gen reads their markers, and hack/crdgen adds
// what a marker cannot carry (the zone list, the schedule's grammar). The
// schema refuses what it can of what the loader and the kinds refuse, and
// never what the controller runs. DeepCopy is generated for the API types
// only, each marked in types.go, not for the loader's own types.
//
// The package's name is not its version, so the version is given too.
//
// +groupName=leasecron.io
// +versionName=v1alpha1
package spec
