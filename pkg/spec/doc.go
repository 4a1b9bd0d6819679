// The CRD's group and version, for controller-gen (see `make generate`):
// the package's name is not its version, so the version is given too.
// DeepCopy methods are generated only for the API types (each carries
// +kubebuilder:object:generate=true in types.go), not for the loader's own.
//
// +groupName=leasecron.io
// +versionName=v1alpha1
package spec
