package kubejob

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// Jobs is what the kind needs of the API server: batch/v1 Jobs in one
// namespace. client-go's typed client (a clientset's BatchV1().Jobs(ns))
// is one; NewJobs returns a small one.
type Jobs interface {
	Create(ctx context.Context, job *batchv1.Job, opts metav1.CreateOptions) (*batchv1.Job, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*batchv1.Job, error)
	List(ctx context.Context, opts metav1.ListOptions) (*batchv1.JobList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// restJobs is client-go's REST client over a scheme of batch/v1 alone, used
// as the generated typed client uses it: client-go's clientset registers
// every built-in API group at start-up, megabytes of binary and of a
// leader's memory that this controller has no use for (pkg/leader's
// KubeClient does the same for Leases).
type restJobs struct {
	c         rest.Interface
	params    runtime.ParameterCodec
	namespace string
}

// NewJobs returns a Jobs client for namespace.
func NewJobs(cfg *rest.Config, namespace string) (Jobs, error) {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	if err := batchv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("jobs client scheme: %w", err)
	}
	c := rest.CopyConfig(cfg)
	gv := batchv1.SchemeGroupVersion
	c.GroupVersion, c.APIPath = &gv, "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("jobs client: %w", err)
	}
	return &restJobs{c: rc, params: runtime.NewParameterCodec(s), namespace: namespace}, nil
}

func (r *restJobs) Create(ctx context.Context, job *batchv1.Job, opts metav1.CreateOptions) (*batchv1.Job, error) {
	out := &batchv1.Job{}
	err := r.c.Post().Namespace(r.namespace).Resource("jobs").VersionedParams(&opts, r.params).Body(job).Do(ctx).Into(out)
	return out, err
}

func (r *restJobs) Get(ctx context.Context, name string, opts metav1.GetOptions) (*batchv1.Job, error) {
	out := &batchv1.Job{}
	err := r.c.Get().Namespace(r.namespace).Resource("jobs").Name(name).VersionedParams(&opts, r.params).Do(ctx).Into(out)
	return out, err
}

func (r *restJobs) List(ctx context.Context, opts metav1.ListOptions) (*batchv1.JobList, error) {
	out := &batchv1.JobList{}
	err := r.c.Get().Namespace(r.namespace).Resource("jobs").VersionedParams(&opts, r.params).Timeout(timeoutOf(opts)).Do(ctx).Into(out)
	return out, err
}

func (r *restJobs) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return r.c.Get().Namespace(r.namespace).Resource("jobs").VersionedParams(&opts, r.params).Timeout(timeoutOf(opts)).Watch(ctx)
}

func (r *restJobs) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return r.c.Delete().Namespace(r.namespace).Resource("jobs").Name(name).Body(&opts).Do(ctx).Error()
}

// timeoutOf is a list's or watch's own time limit, as the typed clients
// set it.
func timeoutOf(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}
