// Package deploy holds kedge's Kubernetes manifests; this test keeps them valid: every file decodes strictly with
// client-go's scheme, kustomization.yaml lists them all, the flags the Deployment passes exist, and the ConfigMap's
// documents load.
package deploy

import (
	"bytes"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
)

// manifests decodes every resource kustomization.yaml lists, strictly (unknown fields are errors).
func manifests(t *testing.T) []runtime.Object {
	t.Helper()
	var kust struct {
		Resources []string `json:"resources"`
	}
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil { // kustomize's own schema is not client-go's to check
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob("*.yaml")
	var want []string
	for _, f := range files {
		if f != "kustomization.yaml" {
			want = append(want, f)
		}
	}
	if got := slices.Sorted(slices.Values(kust.Resources)); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %q, want every manifest: %q", got, want)
	}

	decoder := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	var objs []runtime.Object
	for _, f := range kust.Resources {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s, document %d: %v", f, i+1, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs
}

func only[T runtime.Object](t *testing.T, objs []runtime.Object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, found %d", zero, len(found))
	}
	return found[0]
}

func TestManifests(t *testing.T) {
	objs := manifests(t)
	dep := only[*appsv1.Deployment](t, objs)
	pod := dep.Spec.Template.Spec
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("Deployment replicas = %v, want 2 or more", dep.Spec.Replicas)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The flags exist in kedge's flag set and parse.
	var cfg config.Config
	fs := pflag.NewFlagSet("kedge", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	for _, a := range c.Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || fs.Lookup(name) == nil {
			t.Errorf("argument %q is not a kedge flag", a)
		}
	}
	if err := fs.Parse(c.Args); err != nil {
		t.Fatalf("kedge rejects the Deployment's arguments: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the Deployment's flags do not validate: %v", err)
	}

	// Probes on the debug port; ports match the flags; resources requested.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["debug"] != int32(cfg.HTTPPort) || ports["https"] != int32(cfg.HTTPSPort) || ports["grpctls"] != int32(cfg.GRPCPort) {
		t.Errorf("container ports %v do not match the flags (%d, %d, %d)", ports, cfg.HTTPPort, cfg.HTTPSPort, cfg.GRPCPort)
	}
	for name, probe := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/_healthz": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != name || probe.HTTPGet.Port != intstr.FromString("debug") {
			t.Errorf("probe %s: %+v, want an HTTP GET on the debug port", name, probe)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("resource requests missing: %+v", c.Resources.Requests)
	}
	if grace := pod.TerminationGracePeriodSeconds; grace == nil || float64(*grace) <= (cfg.ShutdownDelay+cfg.DrainTimeout).Seconds() {
		t.Errorf("terminationGracePeriodSeconds %v does not exceed the shutdown delay %v plus the drain timeout %v", grace, cfg.ShutdownDelay, cfg.DrainTimeout)
	}

	// The image is the one `make image` tags, run as the image's non-root user with nothing it does not need.
	checkImageAndSecurity(t, pod, c)

	// The documents kedge reads come from the ConfigMap and load.
	cm := only[*corev1.ConfigMap](t, objs)
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil && v.ConfigMap.Name == cm.Name:
			if !strings.HasPrefix(cfg.Documents.DirectorPath, mounts[v.Name]+"/") || !strings.HasPrefix(cfg.Documents.BackendpoolPath, mounts[v.Name]+"/") {
				t.Errorf("the documents %q and %q are not in the ConfigMap mount %q", cfg.Documents.DirectorPath, cfg.Documents.BackendpoolPath, mounts[v.Name])
			}
		case v.Secret != nil: // made by kustomization.yaml's secretGenerator; TestKustomize checks what it makes
			gen := tlsSecretGenerator(t)
			if v.Secret.SecretName != gen.Name || !strings.HasPrefix(cfg.TLSCertFile, mounts[v.Name]+"/") || !strings.HasPrefix(cfg.TLSKeyFile, mounts[v.Name]+"/") {
				t.Errorf("TLS secret %q is not the generated %q that --server_tls_cert_file %q reads", v.Secret.SecretName, gen.Name, cfg.TLSCertFile)
			}
		}
	}
	director := cm.Data[filepath.Base(cfg.Documents.DirectorPath)]
	pool := cm.Data[filepath.Base(cfg.Documents.BackendpoolPath)]
	if director == "" || pool == "" {
		t.Fatalf("the ConfigMap lacks the documents: keys %v", slices.Sorted(maps.Keys(cm.Data)))
	}
	if _, err := config.Parse([]byte(director), []byte(pool), "configmap director", "configmap backendpool"); err != nil {
		t.Errorf("the ConfigMap's documents do not load:\n%v", err)
	}

	// The ServiceAccount is the pod's, and its RBAC is least privilege.
	sa := only[*corev1.ServiceAccount](t, objs)
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("pod service account %q, want %q", pod.ServiceAccountName, sa.Name)
	}
	role := only[*rbacv1.ClusterRole](t, objs)
	allowed := map[string][]string{"/services": {"list", "watch"}, "discovery.k8s.io/endpointslices": {"list", "watch"}, "/events": {"create"}}
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, verb := range r.Verbs {
					if !slices.Contains(allowed[g+"/"+res], verb) {
						t.Errorf("ClusterRole grants %s on %s/%s: more than kedge needs", verb, g, res)
					}
				}
			}
		}
	}
	binding := only[*rbacv1.ClusterRoleBinding](t, objs)
	if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("ClusterRoleBinding %+v does not bind %s to %s/%s", binding, role.Name, sa.Namespace, sa.Name)
	}

	// The PodDisruptionBudget and the LoadBalancer select kedge's pods; the LoadBalancer exposes only TLS ports.
	pdb := only[*policyv1.PodDisruptionBudget](t, objs)
	labels := dep.Spec.Template.Labels
	for k, v := range pdb.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("PodDisruptionBudget selects %s=%s, which the pods do not carry", k, v)
		}
	}
	svc := only[*corev1.Service](t, objs)
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("Service type %s, want LoadBalancer", svc.Spec.Type)
	}
	for k, v := range svc.Spec.Selector {
		if labels[k] != v {
			t.Errorf("Service selects %s=%s, which the pods do not carry", k, v)
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.StrVal != "https" && p.TargetPort.StrVal != "grpctls" {
			t.Errorf("Service port %q targets %s: only the TLS ports belong on the load balancer", p.Name, p.TargetPort.String())
		}
	}
}

// checkImageAndSecurity checks that the container runs the image `make image` and the Dockerfile make, as the
// Dockerfile's USER, non-root, with a read-only root filesystem, no privilege escalation, no capabilities and the
// runtime's default seccomp profile (docs/kubernetes.md#container-image).
func checkImageAndSecurity(t *testing.T, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	image := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+):\$\(VERSION\)$`).FindSubmatch(makefile)
	if image == nil {
		t.Fatal("the Makefile sets no IMAGE ?= <repository>:$(VERSION)")
	}
	if repo, _, _ := strings.Cut(c.Image, "@"); strings.Split(repo, ":")[0] != string(image[1]) {
		t.Errorf("container image %q, want %s (the Makefile's IMAGE)", c.Image, image[1])
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	user := regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`).FindSubmatch(dockerfile)
	if user == nil {
		t.Fatal("the Dockerfile has no numeric USER uid:gid")
	}
	uid, _ := strconv.ParseInt(string(user[1]), 10, 64)
	gid, _ := strconv.ParseInt(string(user[2]), 10, 64)
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("the pod and the container need a securityContext")
	}
	for what, ok := range map[string]bool{
		"runAsNonRoot":                        psc.RunAsNonRoot != nil && *psc.RunAsNonRoot,
		"runAsUser is the image's USER":       psc.RunAsUser != nil && *psc.RunAsUser == uid && uid != 0,
		"runAsGroup is the image's USER":      psc.RunAsGroup != nil && *psc.RunAsGroup == gid,
		"seccompProfile RuntimeDefault":       psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
		"readOnlyRootFilesystem":              sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
		"allowPrivilegeEscalation false":      sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		"capabilities drop ALL, add none":     sc.Capabilities != nil && slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(sc.Capabilities.Add) == 0,
		"not privileged":                      sc.Privileged == nil || !*sc.Privileged,
		"no container-level runAsUser change": sc.RunAsUser == nil || *sc.RunAsUser == uid,
	} {
		if !ok {
			t.Errorf("securityContext: want %s", what)
		}
	}

	// kustomization.yaml's images entry sets the tag (or digest) of that same image.
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Images []struct {
			Name string `json:"name"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(kust.Images) != 1 || kust.Images[0].Name != string(image[1]) {
		t.Errorf("kustomization.yaml images %+v, want one entry for %s", kust.Images, image[1])
	}
}
