package deploy

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// secretGenerator is the part of kustomization.yaml's secretGenerator this test reads.
type secretGenerator struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	Files []string `json:"files"`
}

// tlsSecretGenerator is kustomization.yaml's one secretGenerator: kedge's TLS Secret from tls.crt and tls.key.
func tlsSecretGenerator(t *testing.T) secretGenerator {
	t.Helper()
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		SecretGenerator []secretGenerator `json:"secretGenerator"`
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(kust.SecretGenerator) != 1 {
		t.Fatalf("kustomization.yaml has %d secretGenerators, want the TLS one", len(kust.SecretGenerator))
	}
	g := kust.SecretGenerator[0]
	if g.Type != string(corev1.SecretTypeTLS) || !slices.Equal(g.Files, []string{"tls.crt", "tls.key"}) {
		t.Fatalf("secretGenerator %+v, want type %s from tls.crt and tls.key", g, corev1.SecretTypeTLS)
	}
	return g
}

// TestKustomize builds docs/deploy as `kubectl apply -k` would (kubectl kustomize: client side, no server) with a
// generated certificate in place of the user's, and checks the output: every object decodes strictly, the TLS Secret
// holds exactly the PEM files given (no placeholder), and the Deployment mounts it.
func TestKustomize(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is needed to build docs/deploy (kubectl kustomize); install it (apt-get install kubectl)")
	}
	dir := t.TempDir()
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	certPEM, keyPEM := testutil.EncodePEM(t, testutil.NewCA(t).Server(t, "kedge.example.com"))
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("kubectl kustomize docs/deploy: %v\n%s", err, stderr.String())
	}

	decoder := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	var objs []runtime.Object
	for i, doc := range bytes.Split(out, []byte("\n---\n")) {
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("kustomize output, document %d: %v\n%s", i+1, err, doc)
		}
		objs = append(objs, obj)
	}
	if len(objs) < len(files)-1 { // every manifest but kustomization.yaml, plus the Secret
		t.Errorf("kustomize made %d objects from %d manifests", len(objs), len(files)-1)
	}

	gen := tlsSecretGenerator(t)
	secret := only[*corev1.Secret](t, objs)
	if secret.Name != gen.Name || secret.Namespace != "kedge" || secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret %s/%s type %s, want kedge/%s type %s", secret.Namespace, secret.Name, secret.Type, gen.Name, corev1.SecretTypeTLS)
	}
	if !bytes.Equal(secret.Data["tls.crt"], certPEM) || !bytes.Equal(secret.Data["tls.key"], keyPEM) {
		t.Errorf("the Secret does not hold the given tls.crt and tls.key")
	}
	block, _ := pem.Decode(secret.Data["tls.crt"])
	if block == nil {
		t.Fatal("the Secret's tls.crt holds no PEM data")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Errorf("the Secret's tls.crt: %v", err)
	}
	dep := only[*appsv1.Deployment](t, objs)
	mounted := false
	for _, v := range dep.Spec.Template.Spec.Volumes {
		mounted = mounted || (v.Secret != nil && v.Secret.SecretName == secret.Name)
	}
	if !mounted {
		t.Errorf("the Deployment does not mount the Secret %q", secret.Name)
	}
}
