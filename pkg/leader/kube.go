package leader

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// LeaseClient is the part of the coordination.k8s.io/v1 Lease API the
// elector uses, in one namespace. NewKubeClient builds one; client-go's typed
// LeaseInterface (and its fake) satisfies it too.
type LeaseClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error)
	Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error)
	List(ctx context.Context, opts metav1.ListOptions) (*coordinationv1.LeaseList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// EventRecorder records a leadership change of identity ("became leader",
// "stopped leading") as an Event about the Lease.
type EventRecorder interface {
	LeaderEvent(ctx context.Context, lease *coordinationv1.Lease, identity, change string) error
}

// KubeClient reaches the two kinds of object the elector reads and writes:
// Leases (LeaseClient) and core/v1 Events (EventRecorder).
//
// It is client-go's REST client over a scheme that holds only those kinds,
// used as client-go's generated clients use it. client-go's clientset, its
// typed clients and its leaderelection package import the scheme of every
// built-in API group and register them all at start-up (and its generic
// typed client brings server-side apply and OpenAPI); not importing them
// keeps 18 MB out of the binary and 13 MiB out of a leader's resident memory
// (see the package comment and BENCHMARKS.md).
type KubeClient struct {
	leases, events rest.Interface
	params         runtime.ParameterCodec
	namespace      string
	component      string
}

var _ LeaseClient = (*KubeClient)(nil)

// NewKubeClient returns a client for Leases and Events in namespace.
// component names the reporter of the Events (the program's name).
func NewKubeClient(cfg *rest.Config, namespace, component string) (*KubeClient, error) {
	s := runtime.NewScheme()
	// The unversioned options (ListOptions, GetOptions, …) and Status, as
	// client-go's own scheme registers them, then the two kinds.
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	if err := coordinationv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("lease client scheme: %w", err)
	}
	s.AddKnownTypes(corev1.SchemeGroupVersion, &corev1.Event{}, &corev1.EventList{})
	metav1.AddToGroupVersion(s, corev1.SchemeGroupVersion)
	codecs := serializer.NewCodecFactory(s).WithoutConversion()

	client := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, apiPath, codecs
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		return rest.RESTClientFor(c)
	}
	leases, err := client(coordinationv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, fmt.Errorf("lease client: %w", err)
	}
	events, err := client(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, fmt.Errorf("event client: %w", err)
	}
	return &KubeClient{leases: leases, events: events, params: runtime.NewParameterCodec(s), namespace: namespace, component: component}, nil
}

// Get implements LeaseClient.
func (c *KubeClient) Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error) {
	return into(&coordinationv1.Lease{}, c.leases.Get().Namespace(c.namespace).Resource("leases").Name(name).
		VersionedParams(&opts, c.params).Do(ctx))
}

// Create implements LeaseClient.
func (c *KubeClient) Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error) {
	return into(&coordinationv1.Lease{}, c.leases.Post().Namespace(c.namespace).Resource("leases").
		VersionedParams(&opts, c.params).Body(lease).Do(ctx))
}

// Update implements LeaseClient.
func (c *KubeClient) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	return into(&coordinationv1.Lease{}, c.leases.Put().Namespace(c.namespace).Resource("leases").Name(lease.Name).
		VersionedParams(&opts, c.params).Body(lease).Do(ctx))
}

// List implements LeaseClient.
func (c *KubeClient) List(ctx context.Context, opts metav1.ListOptions) (*coordinationv1.LeaseList, error) {
	return into(&coordinationv1.LeaseList{}, c.leases.Get().Namespace(c.namespace).Resource("leases").
		VersionedParams(&opts, c.params).Timeout(timeout(opts)).Do(ctx))
}

// Watch implements LeaseClient.
func (c *KubeClient) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.leases.Get().Namespace(c.namespace).Resource("leases").
		VersionedParams(&opts, c.params).Timeout(timeout(opts)).Watch(ctx)
}

// timeout is a list's or watch's own time limit, as client-go's generated
// clients set it.
func timeout(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}

// into decodes a result into obj.
func into[T runtime.Object](obj T, r rest.Result) (T, error) {
	if err := r.Into(obj); err != nil {
		var zero T
		return zero, err
	}
	return obj, nil
}

// LeaderEvent implements EventRecorder: a Normal Event with reason
// LeaderElection about the Lease, as client-go's elector records one.
func (c *KubeClient) LeaderEvent(ctx context.Context, lease *coordinationv1.Lease, identity, change string) error {
	now := time.Now()
	message := identity + " " + change
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", lease.Name, now.UnixNano()),
			Namespace: c.namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Lease", APIVersion: coordinationv1.SchemeGroupVersion.String(),
			Namespace: lease.Namespace, Name: lease.Name, UID: lease.UID, ResourceVersion: lease.ResourceVersion,
		},
		Reason:              "LeaderElection",
		Message:             message,
		Type:                corev1.EventTypeNormal,
		Source:              corev1.EventSource{Component: c.component},
		FirstTimestamp:      metav1.NewTime(now),
		LastTimestamp:       metav1.NewTime(now),
		Count:               1,
		ReportingController: c.component,
		ReportingInstance:   identity,
	}
	if err := c.events.Post().Namespace(c.namespace).Resource("events").Body(ev).Do(ctx).Error(); err != nil {
		return fmt.Errorf("record Event %q: %w", message, err)
	}
	return nil
}
