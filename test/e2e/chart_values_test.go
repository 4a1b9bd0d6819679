package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

// chartBaseValues are the values every render of the value tests starts
// from: the one value the chart requires.
func chartBaseValues() map[string]any {
	return map[string]any{"database": map[string]any{"dsn": "mysql://u:p@db:3306/app"}}
}

// mergeValues is a deep copy of dst with src merged over it, map into map,
// as helm merges values files (a null in src stays, and removes the key).
func mergeValues(dst, src map[string]any) map[string]any {
	out := maps.Clone(dst)
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if base, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(base, sub)
				continue
			}
			out[k] = mergeValues(map[string]any{}, sub)
			continue
		}
		out[k] = v
	}
	return out
}

// chartRender is what renderChart returned, with typed accessors that
// report a missing or malformed object as an error (a check of a case must
// be able to fail without failing the test: see TestChartValuesRender).
type chartRender []map[string]any

func (r chartRender) deployment() (*appsv1.Deployment, error) {
	var d appsv1.Deployment
	return &d, decodeOne(r, "Deployment", &d)
}

// controller is the Deployment's leasecron container.
func (r chartRender) controller() (*corev1.Container, error) {
	d, err := r.deployment()
	if err != nil {
		return nil, err
	}
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "leasecron" {
			return c, nil
		}
	}
	return nil, errors.New("the Deployment has no leasecron container")
}

// testPod is the helm test Pod (leasecron verify).
func (r chartRender) testPod() (*corev1.Pod, error) {
	var p corev1.Pod
	return &p, decodeOne(r, "Pod", &p)
}

func (r chartRender) service() (*corev1.Service, error) {
	var s corev1.Service
	return &s, decodeOne(r, "Service", &s)
}

func (r chartRender) networkPolicy() (*networkingv1.NetworkPolicy, error) {
	var np networkingv1.NetworkPolicy
	return &np, decodeOne(r, "NetworkPolicy", &np)
}

// serviceMonitor is the ServiceMonitor, untyped: the Prometheus Operator's
// types are not a dependency of the project.
func (r chartRender) serviceMonitor() (*unstructured.Unstructured, error) {
	found := r.ofKind("ServiceMonitor")
	if len(found) != 1 {
		return nil, fmt.Errorf("the chart rendered %d ServiceMonitors, want 1", len(found))
	}
	return &unstructured.Unstructured{Object: found[0]}, nil
}

func (r chartRender) ofKind(kind string) []map[string]any {
	var out []map[string]any
	for _, o := range r {
		if o["kind"] == kind {
			out = append(out, o)
		}
	}
	return out
}

// env is the literal value of the controller's variable name, set once.
func (r chartRender) env(name string) (string, error) {
	c, err := r.controller()
	if err != nil {
		return "", err
	}
	got := envVars(c, name)
	if len(got) != 1 || got[0].ValueFrom != nil {
		return "", fmt.Errorf("the controller sets %s %d times (%+v), want one literal value", name, len(got), got)
	}
	return got[0].Value, nil
}

// same fails unless got and want are the same in JSON (so an *int32 equals
// an int, and a typed object the map it was given as).
func same(what string, got, want any) error {
	if g, w := asJSON(got), asJSON(want); g != w {
		return fmt.Errorf("%s = %s, want %s", what, g, w)
	}
	return nil
}

// check is one assertion on a render; it returns what is wrong.
type check func(chartRender) error

// on is a check that the field get reads from the object obj returns (a
// chartRender accessor) is want; what names the field in the error.
func on[T any](what string, want any, obj func(chartRender) (*T, error), get func(*T) any) check {
	return func(r chartRender) error {
		o, err := obj(r)
		if err != nil {
			return err
		}
		return same(what, get(o), want)
	}
}

func onDeployment(what string, want any, get func(*appsv1.Deployment) any) check {
	return on("Deployment "+what, want, chartRender.deployment, get)
}

func onPodSpec(what string, want any, get func(*corev1.PodSpec) any) check {
	return onDeployment("spec.template.spec."+what, want, func(d *appsv1.Deployment) any { return get(&d.Spec.Template.Spec) })
}

func onController(what string, want any, get func(*corev1.Container) any) check {
	return on("the controller container's "+what, want, chartRender.controller, get)
}

func onTestPod(what string, want any, get func(*corev1.Pod) any) check {
	return on("the helm test Pod's "+what, want, chartRender.testPod, get)
}

func onService(what string, want any, get func(*corev1.Service) any) check {
	return on("Service "+what, want, chartRender.service, get)
}

func onNetworkPolicy(what string, want any, get func(*networkingv1.NetworkPolicy) any) check {
	return on("NetworkPolicy "+what, want, chartRender.networkPolicy, get)
}

// onServiceMonitor checks the ServiceMonitor's field at path (see lookup).
func onServiceMonitor(what string, want any, path ...string) check {
	return on("ServiceMonitor "+what, want, chartRender.serviceMonitor, func(sm *unstructured.Unstructured) any { return lookup(sm.Object, path...) })
}

// lookup is the field at path in a decoded object, a number in path indexing
// a list; nil when there is none.
func lookup(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// smEndpoint is the ServiceMonitor's one endpoint's field, as a path.
func smEndpoint(field string) []string { return []string{"spec", "endpoints", "0", field} }

func envIs(name, want string) check {
	return func(r chartRender) error {
		got, err := r.env(name)
		if err != nil {
			return err
		}
		return same(name, got, want)
	}
}

// count fails unless the chart rendered n objects of kind.
func count(kind string, n int) check {
	return func(r chartRender) error {
		if got := len(r.ofKind(kind)); got != n {
			return fmt.Errorf("the chart rendered %d objects of kind %s, want %d", got, kind, n)
		}
		return nil
	}
}

// annotated fails unless every object of kinds has annotation key = want
// ("" : has no annotation key).
func annotated(key, want string, kinds ...string) check {
	return func(r chartRender) error {
		for _, kind := range kinds {
			objs := r.ofKind(kind)
			if len(objs) == 0 {
				return fmt.Errorf("the chart rendered no %s", kind)
			}
			for _, o := range objs {
				u := unstructured.Unstructured{Object: o}
				got, ok := u.GetAnnotations()[key]
				switch {
				case want == "" && ok:
					return fmt.Errorf("%s %s has annotation %s=%q, want none", kind, u.GetName(), key, got)
				case want != "" && got != want:
					return fmt.Errorf("%s %s has annotation %s=%q, want %q", kind, u.GetName(), key, got, want)
				}
			}
		}
		return nil
	}
}

// egressTo is the NetworkPolicy's egress rule that allows port (a number),
// as {to, ports}.
func egressTo(np *networkingv1.NetworkPolicy, port int) (networkingv1.NetworkPolicyEgressRule, error) {
	for _, rule := range np.Spec.Egress {
		for _, p := range rule.Ports {
			if p.Port != nil && p.Port.IntValue() == port {
				return rule, nil
			}
		}
	}
	return networkingv1.NetworkPolicyEgressRule{}, fmt.Errorf("the NetworkPolicy has no egress rule for port %d: %s", port, asJSON(np.Spec.Egress))
}

func onEgressTo(port int, what string, want any, get func(networkingv1.NetworkPolicyEgressRule) any) check {
	return func(r chartRender) error {
		np, err := r.networkPolicy()
		if err != nil {
			return err
		}
		rule, err := egressTo(np, port)
		if err != nil {
			return err
		}
		return same(fmt.Sprintf("the NetworkPolicy's egress rule for port %d: %s", port, what), get(rule), want)
	}
}

// tcp and udp are NetworkPolicy ports as the chart's values give them.
func tcp(port int) map[string]any { return map[string]any{"port": port, "protocol": "TCP"} }
func udp(port int) map[string]any { return map[string]any{"port": port, "protocol": "UDP"} }

// labelled fails unless every object rendered has label key = want in its
// metadata, and the Deployment's Pod template too.
func labelled(key, want string) check {
	return func(r chartRender) error {
		for _, o := range r {
			u := unstructured.Unstructured{Object: o}
			if got := u.GetLabels()[key]; got != want {
				return fmt.Errorf("%s %s has label %s=%q, want %q", u.GetKind(), u.GetName(), key, got, want)
			}
		}
		d, err := r.deployment()
		if err != nil {
			return err
		}
		return same("the Pod template's label "+key, d.Spec.Template.Labels[key], want)
	}
}

// chartSelector is what every selector of the chart selects the controller
// Pods by (release "x"): the same in every release of it, whatever the values
// but the names.
var chartSelector = map[string]string{
	"app.kubernetes.io/name":      "leasecron",
	"app.kubernetes.io/instance":  "x",
	"app.kubernetes.io/component": "controller",
}

// selectorsUnchanged fails unless every selector the chart renders (the
// Deployment's, the default topology spread's, the Service's, the PDB's, the
// NetworkPolicy's and the ServiceMonitor's, those rendered) is exactly
// chartSelector: a selector cannot change on upgrade.
func selectorsUnchanged(r chartRender) error {
	d, err := r.deployment()
	if err != nil {
		return err
	}
	sels := map[string]any{"Deployment spec.selector": d.Spec.Selector.MatchLabels}
	for i, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		sels[fmt.Sprintf("topologySpreadConstraints[%d]", i)] = c.LabelSelector.MatchLabels
	}
	if s, err := r.service(); err == nil {
		sels["Service spec.selector"] = s.Spec.Selector
	}
	var pdb policyv1.PodDisruptionBudget
	if decodeOne(r, "PodDisruptionBudget", &pdb) == nil {
		sels["PodDisruptionBudget spec.selector"] = pdb.Spec.Selector.MatchLabels
	}
	if np, err := r.networkPolicy(); err == nil {
		sels["NetworkPolicy spec.podSelector"] = np.Spec.PodSelector.MatchLabels
	}
	if sm, err := r.serviceMonitor(); err == nil {
		m, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		sels["ServiceMonitor spec.selector"] = m
	}
	for _, what := range slices.Sorted(maps.Keys(sels)) {
		if err := same(what, sels[what], chartSelector); err != nil {
			return err
		}
	}
	return nil
}

// valueCase is one render-and-assert case of TestChartValuesRender: the
// chart rendered with chartBaseValues, needs and values must pass every
// check and keep; rendered with chartBaseValues and needs only, it must fail
// every check, so each check asserts what values change. needs holds what
// the case requires but does not test (serviceMonitor.enabled for the
// ServiceMonitor's fields); the leaf keys of values are what it covers (see
// TestChartValuesEveryValueTested).
type valueCase struct {
	name   string
	needs  map[string]any
	values map[string]any
	checks []check
	keep   []check
}

// m is a map literal's shorthand.
type m = map[string]any

func chartValueCases() []valueCase {
	onSM := m{"serviceMonitor": m{"enabled": true}}
	onNP := m{"networkPolicy": m{"enabled": true}}
	item := []any{m{"name": "nightly", "spec": m{"schedule": "@daily", "dailyStats": m{}}}}
	resources := m{"requests": m{"cpu": "50m", "memory": "96Mi"}, "limits": m{"cpu": "1", "memory": "256Mi"}}
	toleration := []any{m{"key": "dedicated", "operator": "Equal", "value": "cron", "effect": "NoSchedule"}}
	spread := []any{m{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
		"labelSelector": m{"matchLabels": m{"app.kubernetes.io/instance": "x"}}}}
	affinity := m{"nodeAffinity": m{"requiredDuringSchedulingIgnoredDuringExecution": m{"nodeSelectorTerms": []any{
		m{"matchExpressions": []any{m{"key": "pool", "operator": "In", "values": []any{"cron"}}}}}}}}
	peerCIDR := []any{m{"ipBlock": m{"cidr": "10.20.0.0/16", "except": []any{"10.20.9.0/24"}}}}
	peerNS := []any{m{"namespaceSelector": m{"matchLabels": m{"kubernetes.io/metadata.name": "monitoring"}}}}
	dnsPeer := []any{m{"namespaceSelector": m{"matchLabels": m{"kubernetes.io/metadata.name": "kube-system"}},
		"podSelector": m{"matchLabels": m{"k8s-app": "kube-dns"}}}}
	relabel := []any{m{"sourceLabels": []any{"__meta_kubernetes_pod_node_name"}, "targetLabel": "node", "action": "replace"}}
	dropGC := []any{m{"sourceLabels": []any{"__name__"}, "regex": "go_gc_.*", "action": "drop"}}
	secretNames := func(d *appsv1.Deployment) any {
		var out []string
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				out = append(out, v.Name+"="+v.Secret.SecretName)
			}
		}
		return out
	}
	dsnKey := func(d *appsv1.Deployment) any {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == "dsn" && v.Secret != nil {
				return v.Secret.Items
			}
		}
		return nil
	}
	secretData := func(key, want string) check {
		return func(r chartRender) error {
			var s corev1.Secret
			if err := decodeOne(r, "Secret", &s); err != nil {
				return err
			}
			return same("Secret "+s.Name+" stringData", s.StringData, map[string]string{key: want})
		}
	}
	roleLease := func(want string) check {
		return func(r chartRender) error {
			var role rbacv1.Role
			if err := decodeOne(r, "Role", &role); err != nil {
				return err
			}
			return same("the Role's rule on the Lease, resourceNames", role.Rules[0].ResourceNames, []string{want})
		}
	}
	bindingSubject := func(want string) check {
		return func(r chartRender) error {
			var rb rbacv1.RoleBinding
			if err := decodeOne(r, "RoleBinding", &rb); err != nil {
				return err
			}
			return same("the RoleBinding's subject", rb.Subjects[0].Name, want)
		}
	}
	probe := func(get func(*corev1.Container) *corev1.Probe) func(*corev1.Container) any {
		return func(c *corev1.Container) any {
			p := get(c)
			if p == nil {
				return nil
			}
			return m{"initialDelaySeconds": p.InitialDelaySeconds, "periodSeconds": p.PeriodSeconds, "timeoutSeconds": p.TimeoutSeconds, "failureThreshold": p.FailureThreshold}
		}
	}
	return []valueCase{
		{name: "replicaCount", values: m{"replicaCount": 3},
			checks: []check{onDeployment("spec.replicas", 3, func(d *appsv1.Deployment) any { return d.Spec.Replicas })}},
		{name: "replicaCount 1 has no PodDisruptionBudget", values: m{"replicaCount": 1},
			checks: []check{count("PodDisruptionBudget", 0)}},
		{name: "image.repository", values: m{"image": m{"repository": "registry.example/cron"}},
			checks: []check{
				onController("image", "registry.example/cron:0.1.0", func(c *corev1.Container) any { return c.Image }),
				onTestPod("image", "registry.example/cron:0.1.0", func(p *corev1.Pod) any { return p.Spec.Containers[0].Image }),
			}},
		{name: "image.tag", values: m{"image": m{"tag": "9.8.7"}},
			checks: []check{onController("image", "ghcr.io/leasecron/leasecron:9.8.7", func(c *corev1.Container) any { return c.Image })}},
		{name: "image.digest", values: m{"image": m{"tag": "9.8.7", "digest": "sha256:" + strings.Repeat("ab", 32)}},
			checks: []check{onController("image", "ghcr.io/leasecron/leasecron@sha256:"+strings.Repeat("ab", 32), func(c *corev1.Container) any { return c.Image })}},
		{name: "image.pullPolicy", values: m{"image": m{"pullPolicy": "Always"}},
			checks: []check{
				onController("imagePullPolicy", "Always", func(c *corev1.Container) any { return c.ImagePullPolicy }),
				onTestPod("imagePullPolicy", "Always", func(p *corev1.Pod) any { return p.Spec.Containers[0].ImagePullPolicy }),
			}},
		{name: "imagePullSecrets", values: m{"imagePullSecrets": []any{m{"name": "regcred"}}},
			checks: []check{
				onPodSpec("imagePullSecrets", []any{m{"name": "regcred"}}, func(s *corev1.PodSpec) any { return s.ImagePullSecrets }),
				onTestPod("imagePullSecrets", []any{m{"name": "regcred"}}, func(p *corev1.Pod) any { return p.Spec.ImagePullSecrets }),
			}},
		{name: "nameOverride", values: m{"nameOverride": "cron"},
			checks: []check{
				onDeployment("name", "x-cron", func(d *appsv1.Deployment) any { return d.Name }),
				onDeployment("spec.selector", m{"app.kubernetes.io/component": "controller", "app.kubernetes.io/instance": "x", "app.kubernetes.io/name": "cron"},
					func(d *appsv1.Deployment) any { return d.Spec.Selector.MatchLabels }),
			}},
		{name: "fullnameOverride", values: m{"fullnameOverride": "cron-main"},
			checks: []check{
				onDeployment("name", "cron-main", func(d *appsv1.Deployment) any { return d.Name }),
				onService("name", "cron-main", func(s *corev1.Service) any { return s.Name }),
				envIs("LEASECRON_LEASE_NAME", "cron-main"),
			}},
		{name: "serviceAccount.create off", values: m{"serviceAccount": m{"create": false, "name": "runner"}},
			checks: []check{count("ServiceAccount", 0)},
			keep:   []check{onPodSpec("serviceAccountName", "runner", func(s *corev1.PodSpec) any { return s.ServiceAccountName })}},
		{name: "serviceAccount.name", values: m{"serviceAccount": m{"name": "runner"}},
			checks: []check{
				onPodSpec("serviceAccountName", "runner", func(s *corev1.PodSpec) any { return s.ServiceAccountName }),
				bindingSubject("runner"),
				func(r chartRender) error {
					var sa corev1.ServiceAccount
					if err := decodeOne(r, "ServiceAccount", &sa); err != nil {
						return err
					}
					return same("ServiceAccount name", sa.Name, "runner")
				},
			}},
		{name: "serviceAccount.annotations", values: m{"serviceAccount": m{"annotations": m{"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/cron"}}},
			checks: []check{annotated("eks.amazonaws.com/role-arn", "arn:aws:iam::1:role/cron", "ServiceAccount")}},
		{name: "rbac.keepOnUninstall", values: m{"rbac": m{"keepOnUninstall": false}},
			checks: []check{annotated("helm.sh/resource-policy", "", "ServiceAccount", "Role", "RoleBinding")}},
		{name: "leaderElection.leaseName", values: m{"leaderElection": m{"leaseName": "cron-lock"}},
			checks: []check{envIs("LEASECRON_LEASE_NAME", "cron-lock"), roleLease("cron-lock")}},
		{name: "leaderElection timings", values: m{"leaderElection": m{"leaseDuration": "30s", "renewDeadline": "20s", "retryPeriod": "4s"}},
			checks: []check{envIs("LEASECRON_LEASE_DURATION", "30s"), envIs("LEASECRON_RENEW_DEADLINE", "20s"), envIs("LEASECRON_RETRY_PERIOD", "4s")}},
		{name: "schedules", values: m{"schedules": m{"daily-stats": "@hourly"}},
			checks: []check{envIs("LEASECRON_SCHEDULE", "daily-stats=@hourly")}},
		{name: "timezone", values: m{"timezone": "Europe/Berlin"},
			checks: []check{
				envIs("LEASECRON_TIMEZONE", "Europe/Berlin"),
				onTestPod("args", true, func(p *corev1.Pod) any { return slices.Contains(p.Spec.Containers[0].Args, "--timezone=Europe/Berlin") }),
			}},
		{name: "catch-up, timeouts, retention and grace", values: m{"catchUpWindow": "12h", "catchUpLimit": 7, "jobTimeout": "5m", "historyRetention": "720h", "databaseLostTimeout": "90s",
			"shutdownGracePeriod": "50s", "terminationGracePeriodSeconds": 65},
			checks: []check{
				envIs("LEASECRON_CATCH_UP_WINDOW", "12h"), envIs("LEASECRON_CATCH_UP_LIMIT", "7"), envIs("LEASECRON_JOB_TIMEOUT", "5m"), envIs("LEASECRON_HISTORY_RETENTION", "720h"),
				envIs("LEASECRON_DATABASE_LOST_TIMEOUT", "90s"), envIs("LEASECRON_SHUTDOWN_GRACE_PERIOD", "50s"),
				onPodSpec("terminationGracePeriodSeconds", 65, func(s *corev1.PodSpec) any { return s.TerminationGracePeriodSeconds }),
			}},
		{name: "database.dsn", values: m{"database": m{"dsn": "postgres://a:b@pg:5432/app"}},
			checks: []check{
				secretData("dsn", "postgres://a:b@pg:5432/app"), // and TestChartDSNChecksumRollsPods
			}},
		{name: "database.existingSecret", values: m{"database": m{"existingSecret": "app-db"}},
			checks: []check{count("Secret", 0), onDeployment("Secret volumes", []string{"dsn=app-db"}, secretNames)},
			keep:   []check{onDeployment("checksum/dsn annotation", "", func(d *appsv1.Deployment) any { return d.Spec.Template.Annotations["checksum/dsn"] })}},
		{name: "database.existingSecretKey", values: m{"database": m{"existingSecretKey": "url"}},
			checks: []check{
				secretData("url", "mysql://u:p@db:3306/app"),
				onDeployment("dsn volume items", []any{m{"key": "url", "path": "dsn"}}, dsnKey),
			}},
		{name: "logs", values: m{"logFormat": "text", "logLevel": "debug"},
			checks: []check{envIs("LEASECRON_LOG_FORMAT", "text"), envIs("LEASECRON_LOG_LEVEL", "debug")}},
		{name: "extraArgs", values: m{"extraArgs": []any{"--catch-up-limit=3"}},
			checks: []check{onController("args", []string{"run", "--catch-up-limit=3"}, func(c *corev1.Container) any { return c.Args })}},
		{name: "extraEnv", values: m{"extraEnv": []any{m{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}}},
			checks: []check{envIs("HTTPS_PROXY", "http://proxy:3128")}},
		{name: "envFrom", values: m{"envFrom": []any{m{"secretRef": m{"name": "cron-env"}}, m{"configMapRef": m{"name": "cron-settings", "optional": true}, "prefix": "APP_"}}},
			checks: []check{onController("envFrom", []any{m{"secretRef": m{"name": "cron-env"}}, m{"configMapRef": m{"name": "cron-settings", "optional": true}, "prefix": "APP_"}},
				func(c *corev1.Container) any { return c.EnvFrom })}},
		{name: "resources", values: m{"resources": resources},
			checks: []check{onController("resources", resources, func(c *corev1.Container) any { return c.Resources })}},
		{name: "deploymentAnnotations", values: m{"deploymentAnnotations": m{"reloader.stakater.com/auto": "true"}},
			checks: []check{annotated("reloader.stakater.com/auto", "true", "Deployment")},
			keep:   []check{onDeployment("Pod template annotation", "", func(d *appsv1.Deployment) any { return d.Spec.Template.Annotations["reloader.stakater.com/auto"] })}},
		{name: "revisionHistoryLimit", values: m{"revisionHistoryLimit": 3},
			checks: []check{onDeployment("spec.revisionHistoryLimit", 3, func(d *appsv1.Deployment) any { return d.Spec.RevisionHistoryLimit })}},
		{name: "podAnnotations", values: m{"podAnnotations": m{"prometheus.io/scrape": "true"}},
			checks: []check{onDeployment("Pod template annotation", "true", func(d *appsv1.Deployment) any { return d.Spec.Template.Annotations["prometheus.io/scrape"] })}},
		{name: "podLabels", values: m{"podLabels": m{"team": "data"}},
			checks: []check{onDeployment("Pod template label team", "data", func(d *appsv1.Deployment) any { return d.Spec.Template.Labels["team"] })},
			keep:   []check{selectorsUnchanged}},
		{name: "priorityClassName", values: m{"priorityClassName": "cron-critical"},
			checks: []check{onPodSpec("priorityClassName", "cron-critical", func(s *corev1.PodSpec) any { return s.PriorityClassName })}},
		{name: "podSecurityContext", values: m{"podSecurityContext": m{"runAsUser": 1001, "fsGroupChangePolicy": "OnRootMismatch"}},
			checks: []check{
				onPodSpec("securityContext.runAsUser", 1001, func(s *corev1.PodSpec) any { return s.SecurityContext.RunAsUser }),
				onPodSpec("securityContext.fsGroupChangePolicy", "OnRootMismatch", func(s *corev1.PodSpec) any { return s.SecurityContext.FSGroupChangePolicy }),
				onTestPod("securityContext.runAsUser", 1001, func(p *corev1.Pod) any { return p.Spec.SecurityContext.RunAsUser }),
			}},
		{name: "securityContext", values: m{"securityContext": m{"readOnlyRootFilesystem": false}},
			checks: []check{
				onController("securityContext.readOnlyRootFilesystem", false, func(c *corev1.Container) any { return c.SecurityContext.ReadOnlyRootFilesystem }),
				onTestPod("securityContext.readOnlyRootFilesystem", false, func(p *corev1.Pod) any { return p.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem }),
			}},
		{name: "rollingUpdate", values: m{"rollingUpdate": m{"maxSurge": "50%", "maxUnavailable": 1}},
			checks: []check{onDeployment("spec.strategy.rollingUpdate", m{"maxSurge": "50%", "maxUnavailable": 1},
				func(d *appsv1.Deployment) any { return d.Spec.Strategy.RollingUpdate })}},
		{name: "startupProbe", values: m{"startupProbe": m{"periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 90}},
			checks: []check{onController("startupProbe", m{"initialDelaySeconds": 0, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 90},
				probe(func(c *corev1.Container) *corev1.Probe { return c.StartupProbe }))}},
		{name: "livenessProbe", values: m{"livenessProbe": m{"initialDelaySeconds": 5, "periodSeconds": 20, "timeoutSeconds": 2, "failureThreshold": 6}},
			checks: []check{onController("livenessProbe", m{"initialDelaySeconds": 5, "periodSeconds": 20, "timeoutSeconds": 2, "failureThreshold": 6},
				probe(func(c *corev1.Container) *corev1.Probe { return c.LivenessProbe }))}},
		{name: "readinessProbe", values: m{"readinessProbe": m{"initialDelaySeconds": 1, "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 2}},
			checks: []check{onController("readinessProbe", m{"initialDelaySeconds": 1, "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 2},
				probe(func(c *corev1.Container) *corev1.Probe { return c.ReadinessProbe }))}},
		{name: "nodeSelector", values: m{"nodeSelector": m{"pool": "cron"}},
			checks: []check{
				onPodSpec("nodeSelector", m{"pool": "cron"}, func(s *corev1.PodSpec) any { return s.NodeSelector }),
				onTestPod("nodeSelector", m{"pool": "cron"}, func(p *corev1.Pod) any { return p.Spec.NodeSelector }),
			}},
		{name: "tolerations", values: m{"tolerations": toleration},
			checks: []check{
				onPodSpec("tolerations", toleration, func(s *corev1.PodSpec) any { return s.Tolerations }),
				onTestPod("tolerations", toleration, func(p *corev1.Pod) any { return p.Spec.Tolerations }),
			}},
		{name: "affinity", values: m{"affinity": affinity},
			checks: []check{onPodSpec("affinity", affinity, func(s *corev1.PodSpec) any { return s.Affinity })}},
		{name: "topologySpreadConstraints", values: m{"topologySpreadConstraints": spread},
			checks: []check{onPodSpec("topologySpreadConstraints", spread, func(s *corev1.PodSpec) any { return s.TopologySpreadConstraints })}},
		{name: "podDisruptionBudget.enabled", values: m{"podDisruptionBudget": m{"enabled": false}},
			checks: []check{count("PodDisruptionBudget", 0)}},
		{name: "podDisruptionBudget.maxUnavailable", values: m{"podDisruptionBudget": m{"maxUnavailable": "50%"}},
			checks: []check{func(r chartRender) error {
				var pdb policyv1.PodDisruptionBudget
				if err := decodeOne(r, "PodDisruptionBudget", &pdb); err != nil {
					return err
				}
				return same("PodDisruptionBudget spec.maxUnavailable", pdb.Spec.MaxUnavailable, "50%")
			}}},
		{name: "service", values: m{"service": m{"type": "NodePort", "port": 9090, "annotations": m{"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}}},
			checks: []check{
				onService("spec.type", "NodePort", func(s *corev1.Service) any { return s.Spec.Type }),
				onService("spec.ports", []any{m{"name": "metrics", "port": 9090, "targetPort": "http", "protocol": "TCP"}}, func(s *corev1.Service) any { return s.Spec.Ports }),
				annotated("service.beta.kubernetes.io/aws-load-balancer-internal", "true", "Service"),
			}},
		{name: "serviceMonitor.enabled", values: onSM,
			checks: []check{
				onServiceMonitor("metadata.namespace", "jobs", "metadata", "namespace"),
				onServiceMonitor("spec.namespaceSelector", m{"matchNames": []any{"jobs"}}, "spec", "namespaceSelector"),
				onServiceMonitor("endpoint", []any{m{"port": "metrics", "path": "/metrics", "interval": "30s"}}, "spec", "endpoints"),
			},
			keep: []check{selectorsUnchanged}},
		{name: "serviceMonitor fields", needs: onSM, values: m{"serviceMonitor": m{"interval": "1m", "scrapeTimeout": "20s", "labels": m{"release": "prom"},
			"relabelings": relabel, "metricRelabelings": dropGC}},
			checks: []check{
				onServiceMonitor("endpoint interval", "1m", smEndpoint("interval")...),
				onServiceMonitor("endpoint scrapeTimeout", "20s", smEndpoint("scrapeTimeout")...),
				onServiceMonitor("label release", "prom", "metadata", "labels", "release"),
				onServiceMonitor("endpoint relabelings", relabel, smEndpoint("relabelings")...),
				onServiceMonitor("endpoint metricRelabelings", dropGC, smEndpoint("metricRelabelings")...),
			}},
		{name: "serviceMonitor.namespace", needs: onSM, values: m{"serviceMonitor": m{"namespace": "monitoring"}},
			checks: []check{onServiceMonitor("metadata.namespace", "monitoring", "metadata", "namespace")},
			keep:   []check{onServiceMonitor("spec.namespaceSelector", m{"matchNames": []any{"jobs"}}, "spec", "namespaceSelector")}},
		{name: "networkPolicy.enabled", values: onNP,
			checks: []check{
				onNetworkPolicy("spec.policyTypes", []string{"Ingress", "Egress"}, func(np *networkingv1.NetworkPolicy) any { return np.Spec.PolicyTypes }),
				onNetworkPolicy("spec.ingress", []any{m{"ports": []any{tcp(8080)}}}, func(np *networkingv1.NetworkPolicy) any { return np.Spec.Ingress }),
				onNetworkPolicy("spec.egress", []any{
					m{"ports": []any{udp(53), tcp(53)}},
					m{"ports": []any{tcp(3306), tcp(5432)}},
					m{"ports": []any{tcp(443), tcp(6443)}},
				}, func(np *networkingv1.NetworkPolicy) any { return np.Spec.Egress }),
			},
			keep: []check{selectorsUnchanged}},
		{name: "networkPolicy.database", needs: onNP, values: m{"networkPolicy": m{"database": m{"ports": []any{tcp(6432)}, "to": peerCIDR}}},
			checks: []check{onEgressTo(6432, "to", peerCIDR, func(r networkingv1.NetworkPolicyEgressRule) any { return r.To })},
			keep:   []check{onEgressTo(6432, "ports", []any{tcp(6432)}, func(r networkingv1.NetworkPolicyEgressRule) any { return r.Ports })}},
		{name: "networkPolicy.apiServer", needs: onNP, values: m{"networkPolicy": m{"apiServer": m{"ports": []any{tcp(8443)}, "to": []any{m{"ipBlock": m{"cidr": "172.20.0.10/32"}}}}}},
			checks: []check{onEgressTo(8443, "to", []any{m{"ipBlock": m{"cidr": "172.20.0.10/32"}}}, func(r networkingv1.NetworkPolicyEgressRule) any { return r.To })},
			keep:   []check{onEgressTo(8443, "ports", []any{tcp(8443)}, func(r networkingv1.NetworkPolicyEgressRule) any { return r.Ports })}},
		{name: "networkPolicy.dns.to", needs: onNP, values: m{"networkPolicy": m{"dns": m{"to": dnsPeer}}},
			checks: []check{onEgressTo(53, "to", dnsPeer, func(r networkingv1.NetworkPolicyEgressRule) any { return r.To })}},
		{name: "networkPolicy.metrics.from", needs: onNP, values: m{"networkPolicy": m{"metrics": m{"from": peerNS}}},
			checks: []check{onNetworkPolicy("spec.ingress", []any{m{"ports": []any{tcp(8080)}, "from": peerNS}}, func(np *networkingv1.NetworkPolicy) any { return np.Spec.Ingress })}},
		{name: "networkPolicy.extraEgress", needs: onNP, values: m{"networkPolicy": m{"extraEgress": []any{m{"to": peerCIDR, "ports": []any{tcp(443)}}, m{"ports": []any{tcp(25)}}}}},
			checks: []check{
				onNetworkPolicy("last egress rules", []any{m{"to": peerCIDR, "ports": []any{tcp(443)}}, m{"ports": []any{tcp(25)}}},
					func(np *networkingv1.NetworkPolicy) any { return np.Spec.Egress[max(0, len(np.Spec.Egress)-2):] }),
			}},
		{name: "commonLabels, jobs from the cluster", needs: m{"jobs": m{"items": item}, "serviceMonitor": m{"enabled": true}, "networkPolicy": m{"enabled": true}},
			values: m{"commonLabels": m{"team": "payments", "cost-center": "42"}},
			checks: []check{labelled("team", "payments"), labelled("cost-center", "42")},
			keep:   []check{selectorsUnchanged, count("ScheduledJob", 1)}},
		{name: "commonLabels, jobs from a file", needs: m{"jobs": m{"source": "file", "items": item}},
			values: m{"commonLabels": m{"team": "payments"}},
			checks: []check{labelled("team", "payments")},
			keep:   []check{selectorsUnchanged, count("ConfigMap", 1)}},
		{name: "commonLabels under podLabels and serviceMonitor.labels", needs: m{"serviceMonitor": m{"enabled": true, "labels": m{"team": "monitoring"}}, "podLabels": m{"team": "data"}},
			values: m{"commonLabels": m{"team": "payments"}},
			checks: []check{onDeployment("label team", "payments", func(d *appsv1.Deployment) any { return d.Labels["team"] })},
			// The more specific map wins, and the label is written once (twice would not parse).
			keep: []check{
				onServiceMonitor("label team", "monitoring", "metadata", "labels", "team"),
				onDeployment("Pod template label team", "data", func(d *appsv1.Deployment) any { return d.Spec.Template.Labels["team"] }),
			}},
		{name: "tests.verifyArgs", values: m{"tests": m{"verifyArgs": []any{"--from=2026-01-01"}}},
			checks: []check{onTestPod("last arg", "--from=2026-01-01", func(p *corev1.Pod) any { return p.Spec.Containers[0].Args[len(p.Spec.Containers[0].Args)-1] })}},
	}
}

// chartValuesTestedElsewhere are the values whose rendering other tests
// assert (value → test), beyond what TestChartValuesRender checks.
var chartValuesTestedElsewhere = map[string]string{
	"jobs.source":                   "TestChartJobsRender",
	"jobs.items":                    "TestChartJobsClusterRender",
	"allowCommandJobs":              "TestChartKindSwitchesRender",
	"kubernetesJob.enabled":         "TestChartRoleRules",
	"kubernetesJob.grantFinalizers": "TestChartRoleRules",
	"rbac.create":                   "TestChartRoleRules",
	"extraVolumes":                  "TestChartExtraVolumesRender",
	"extraVolumeMounts":             "TestChartExtraVolumesRender",
	// test/alerts renders the PrometheusRule and the dashboard.
	"metrics.prometheusRule.enabled":         "test/alerts TestChartPrometheusRuleRender",
	"metrics.prometheusRule.labels":          "test/alerts TestChartPrometheusRuleRender",
	"metrics.prometheusRule.ruleLabels":      "test/alerts TestChartPrometheusRuleRender",
	"metrics.prometheusRule.disabled":        "test/alerts TestChartPrometheusRuleRender",
	"metrics.prometheusRule.for":             "test/alerts TestChartPrometheusRuleRender",
	"metrics.prometheusRule.severity":        "test/alerts TestChartPrometheusRuleRender",
	"metrics.prometheusRule.additionalRules": "test/alerts TestChartPrometheusRuleRender",
	"metrics.grafanaDashboard.enabled":       "test/alerts TestChartDashboardRender",
	"metrics.grafanaDashboard.labels":        "test/alerts TestChartDashboardRender",
	"metrics.grafanaDashboard.annotations":   "test/alerts TestChartDashboardRender",
}

// TestChartValuesRender renders the chart for each case of chartValueCases
// and asserts the fields its values change: with them every check passes,
// without them (the base values and the case's needs) every check fails.
func TestChartValuesRender(t *testing.T) {
	renders := map[string]chartRender{} // values in JSON → render
	render := func(t *testing.T, values map[string]any) chartRender {
		key := asJSON(values)
		if r, ok := renders[key]; ok {
			return r
		}
		r := chartRender(renderChart(t, values))
		renders[key] = r
		return r
	}
	for _, tc := range chartValueCases() {
		t.Run(tc.name, func(t *testing.T) {
			without := mergeValues(chartBaseValues(), tc.needs)
			with := render(t, mergeValues(without, tc.values))
			for _, c := range append(slices.Clone(tc.checks), tc.keep...) {
				if err := c(with); err != nil {
					t.Errorf("with %s: %v", asJSON(tc.values), err)
				}
			}
			before := render(t, without)
			for i, c := range tc.checks {
				if c(before) == nil {
					t.Errorf("check %d passes without %s too: it does not assert what the values change", i, asJSON(tc.values))
				}
			}
		})
	}
}

// TestChartValuesRenderAcceptedByAPIServer: what each case of
// chartValueCases renders is accepted by a real kube-apiserver, object by
// object, in a server-side dry-run create with strict field validation (the
// API's schemas, the ScheduledJob CRD's schema and rules, admission), so no
// value renders a field the API refuses: a NetworkPolicy peer, an envFrom
// source, a toleration. The ServiceMonitor is left out: the Prometheus
// Operator's CRD is not installed here.
func TestChartValuesRenderAcceptedByAPIServer(t *testing.T) {
	cp := kube.Start(t, kube.Options{})
	cp.InstallCRDs(t)
	ns := cp.Namespace(t, "jobs") // renderChart's namespace
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	// The helm test Pod runs as the namespace's default ServiceAccount, which
	// only the controller manager would make; admission refuses a Pod without it.
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(cs.Discovery())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn := dynamic.NewForConfigOrDie(cp.AdminConfig())
	for _, tc := range chartValueCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, o := range renderChart(t, mergeValues(mergeValues(chartBaseValues(), tc.needs), tc.values)) {
				u := &unstructured.Unstructured{Object: o}
				if u.GetKind() == "ServiceMonitor" {
					continue
				}
				gvk := u.GroupVersionKind()
				mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					t.Errorf("%s %s: %v", gvk, u.GetName(), err)
					continue
				}
				opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict}
				if _, err := dyn.Resource(mapping.Resource).Namespace(u.GetNamespace()).Create(ctx, u, opts); err != nil {
					t.Errorf("the API server refuses the rendered %s %s: %v", u.GetKind(), u.GetName(), err)
				}
			}
		})
	}
}

// TestChartValuesEveryValueTested: every value of values.yaml (as
// chartValues flattens it) is set by a case of TestChartValuesRender or is
// in chartValuesTestedElsewhere, with a test of that name in this package;
// so a new value needs a render test.
func TestChartValuesEveryValueTested(t *testing.T) {
	// A test is named "TestX" (in this package) or "test/dir TestX" (in
	// that package of the module).
	sources := map[string]string{}
	source := func(dir string) string {
		if src, ok := sources[dir]; ok {
			return src
		}
		files, err := filepath.Glob(filepath.Join(repo, dir, "*_test.go"))
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, f := range files {
			c, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(c)
		}
		sources[dir] = b.String()
		return sources[dir]
	}
	cases := chartValueCases()
	for _, v := range chartValues(t) {
		if test, ok := chartValuesTestedElsewhere[v.key]; ok {
			dir, name, found := strings.Cut(test, " ")
			if !found {
				dir, name = "test/e2e", test
			}
			if !strings.Contains(source(dir), "func "+name+"(t *testing.T)") {
				t.Errorf("chartValuesTestedElsewhere names %s for %s: no such test in %s", name, v.key, dir)
			}
			continue
		}
		if !slices.ContainsFunc(cases, func(c valueCase) bool { return hasPath(c.values, strings.Split(v.key, ".")) }) {
			t.Errorf("values.yaml: %s is set by no case of chartValueCases (TestChartValuesRender): add one that asserts what it renders", v.key)
		}
	}
}

// hasPath: values has a key at path, map by map.
func hasPath(values map[string]any, path []string) bool {
	v, ok := values[path[0]]
	if !ok || len(path) == 1 {
		return ok
	}
	sub, ok := v.(map[string]any)
	return ok && hasPath(sub, path[1:])
}

// TestChartDSNChecksumRollsPods: the Pod template carries a checksum of the
// chart-made DSN Secret, so a new database.dsn rolls the Pods (with
// existingSecret there is none: TestChartValuesRender).
func TestChartDSNChecksumRollsPods(t *testing.T) {
	sum := func(dsn string) string {
		var d appsv1.Deployment
		renderedOne(t, renderChart(t, m{"database": m{"dsn": dsn}}), "Deployment", &d)
		return d.Spec.Template.Annotations["checksum/dsn"]
	}
	if a, b := sum("mysql://u:p@db:3306/app"), sum("postgres://a:b@pg:5432/app"); a == "" || a == b {
		t.Errorf("checksum/dsn is %q for one DSN and %q for another: want two different checksums", a, b)
	}
}
