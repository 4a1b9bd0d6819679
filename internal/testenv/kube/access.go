package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// accessTimeout bounds the waits of Namespace and ServiceAccountConfig.
const accessTimeout = time.Minute

// Namespace creates the namespace name and returns once it can hold Pods:
// with the controller manager running, once its "default" ServiceAccount
// exists (before that, the API server refuses Pods in it, and a controller
// that creates them backs off). It is deleted in t.Cleanup.
func (c *ControlPlane) Namespace(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), accessTimeout)
	defer cancel()
	admin := kubernetes.NewForConfigOrDie(c.AdminConfig())
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kube: create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := admin.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("kube: delete namespace %s: %v", name, err)
		}
	})
	if !c.opts.ControllerManager {
		return name
	}
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := admin.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("kube: namespace %s has no default ServiceAccount after %s: %v", name, accessTimeout, err)
	}
	return name
}

// ServiceAccountConfig returns a client config that authenticates as a new
// ServiceAccount ns/name (a TokenRequest token, valid for an hour) whose
// only rights are rules, granted by a Role and RoleBinding of its own name
// in ns (no rules: no rights). It returns once the API server's authorizer
// allows every verb of every rule, which it learns of through a watch of
// its own.
func (c *ControlPlane) ServiceAccountConfig(t testing.TB, ns, name string, rules ...rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), accessTimeout)
	defer cancel()
	admin := kubernetes.NewForConfigOrDie(c.AdminConfig())
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kube: create ServiceAccount %s/%s: %v", ns, name, err)
	}
	if len(rules) > 0 {
		if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("kube: create Role %s/%s: %v", ns, name, err)
		}
		if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("kube: create RoleBinding %s/%s: %v", ns, name, err)
		}
	}
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kube: TokenRequest for %s/%s: %v", ns, name, err)
	}
	user := "system:serviceaccount:" + ns + ":" + name
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	for _, r := range rules {
		for _, attrs := range ruleAttributes(ns, r) {
			err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				sar, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
					Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: attrs},
				}, metav1.CreateOptions{})
				return err == nil && sar.Status.Allowed, nil
			})
			if err != nil {
				t.Fatalf("kube: %s is not allowed to %s within %s: %v", user, describe(attrs), accessTimeout, err)
			}
		}
	}
	return &rest.Config{Host: c.host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData()}}
}

// ruleAttributes lists a rule's requests, one per verb, group, resource
// and name (the first of each list is enough to see the binding in force,
// but every one is checked).
func ruleAttributes(ns string, r rbacv1.PolicyRule) []*authorizationv1.ResourceAttributes {
	names := r.ResourceNames
	if len(names) == 0 {
		names = []string{""}
	}
	var out []*authorizationv1.ResourceAttributes
	for _, g := range r.APIGroups {
		for _, res := range r.Resources {
			resource, sub, _ := strings.Cut(res, "/")
			for _, v := range r.Verbs {
				for _, n := range names {
					out = append(out, &authorizationv1.ResourceAttributes{Namespace: ns, Verb: v, Group: g, Resource: resource, Subresource: sub, Name: n})
				}
			}
		}
	}
	return out
}

func describe(a *authorizationv1.ResourceAttributes) string {
	what := a.Resource
	if a.Subresource != "" {
		what += "/" + a.Subresource
	}
	if a.Group != "" {
		what += "." + a.Group
	}
	if a.Name != "" {
		what += " " + a.Name
	}
	return fmt.Sprintf("%s %s in %s", a.Verb, what, a.Namespace)
}
