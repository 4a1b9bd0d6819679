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
	"k8s.io/client-go/gentype"
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
// It is client-go's REST client and generic typed client (gentype) over a
// scheme that holds only those kinds. client-go's clientset, its typed
// clients and its leaderelection package all import the scheme of every
// built-in API group and register them at start-up; not importing them keeps
// about 20 MB out of the binary and its resident memory (see the package
// comment and BENCHMARKS.md).
type KubeClient struct {
	*gentype.ClientWithList[*coordinationv1.Lease, *coordinationv1.LeaseList]
	events    *gentype.Client[*corev1.Event]
	namespace string
	component string
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
	params := runtime.NewParameterCodec(s)

	client := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, apiPath, codecs
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		return rest.RESTClientFor(c)
	}
	coordination, err := client(coordinationv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, fmt.Errorf("lease client: %w", err)
	}
	core, err := client(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, fmt.Errorf("event client: %w", err)
	}
	return &KubeClient{
		ClientWithList: gentype.NewClientWithList[*coordinationv1.Lease, *coordinationv1.LeaseList](
			"leases", coordination, params, namespace,
			func() *coordinationv1.Lease { return &coordinationv1.Lease{} },
			func() *coordinationv1.LeaseList { return &coordinationv1.LeaseList{} }),
		events: gentype.NewClient[*corev1.Event]("events", core, params, namespace,
			func() *corev1.Event { return &corev1.Event{} }),
		namespace: namespace,
		component: component,
	}, nil
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
	if _, err := c.events.Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("record Event %q: %w", message, err)
	}
	return nil
}
