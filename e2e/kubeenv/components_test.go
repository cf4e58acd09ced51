package kubeenv

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPinnedVersions reads the pins from the build modules and checks that kube-apiserver's staging modules are all
// replaced at the release that matches k8s.io/kubernetes (v1.X.Y goes with v0.X.Y).
func TestPinnedVersions(t *testing.T) {
	cs, err := Components()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range cs {
		got[c.Name] = c.Version
	}
	if !strings.HasPrefix(got["etcd"], "v3.") || !strings.HasPrefix(got["kube-apiserver"], "v1.") {
		t.Fatalf("versions = %v", got)
	}
	staging := "v0." + strings.TrimPrefix(got["kube-apiserver"], "v1.")
	f, err := os.Open(filepath.Join(cs[1].dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	replaced := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		fields := strings.Fields(sc.Text())
		if len(fields) == 4 && fields[1] == "=>" {
			replaced++
			if !strings.HasPrefix(fields[0], "k8s.io/") || fields[2] != fields[0] || fields[3] != staging {
				t.Errorf("replace %s: want %s => %s %s", strings.Join(fields, " "), fields[0], fields[0], staging)
			}
		}
	}
	if replaced < 30 {
		t.Errorf("only %d staging modules replaced", replaced)
	}
}

func TestRequiredVersion(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, gomod, want string
	}{
		{"single line", "module m\n\nrequire example.com/a v1.2.3\n", "v1.2.3"},
		{"block with comments", "module m\nrequire (\n\texample.com/b v0.1.0 // indirect\n\texample.com/a v1.4.0 // the pin\n)\n", "v1.4.0"},
		{"missing", "module m\nrequire example.com/b v0.1.0\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".mod")
			if err := os.WriteFile(p, []byte(tc.gomod), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := requiredVersion(p, "example.com/a")
			if got != tc.want || (err == nil) != (tc.want != "") {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestBuildCachesOnce builds a tiny module as a component into a private cache: the binary lands in
// <cache>/kedge/kube/<name>-<version>/<name>, no temporary directory is left, and a second Build reuses it.
func TestBuildCachesOnce(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	src := t.TempDir()
	files := map[string]string{
		"go.mod":  "module example.com/hello\n\ngo 1.22\n",
		"main.go": "package main\n\nfunc main() { println(\"hello\") }\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := Component{Name: "hello", Module: "example.com/hello", Version: "v0.0.1", dir: src}
	if c.Cached() {
		t.Fatal("cached before the build")
	}
	var log strings.Builder
	p, err := c.Build(t.Context(), &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if want := filepath.Join(cache, "kedge", "kube", "hello-v0.0.1", "hello"); p != want || !c.Cached() {
		t.Fatalf("built %s (cached %v), want %s", p, c.Cached(), want)
	}
	entries, _ := os.ReadDir(filepath.Join(cache, "kedge", "kube"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".build-") {
			t.Errorf("temporary build directory %s left behind", e.Name())
		}
	}
	st, _ := os.Stat(p)
	// The second call must not build: make the source unbuildable and expect the same, untouched file.
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\nbroken"), 0o600); err != nil {
		t.Fatal(err)
	}
	p2, err := c.Build(t.Context(), &log)
	if err != nil || p2 != p {
		t.Fatalf("second build: %s, %v", p2, err)
	}
	if st2, _ := os.Stat(p); !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("the cached binary was rebuilt")
	}
}

func TestLdflagsStampKubernetesVersion(t *testing.T) {
	c := Component{Name: "kube-apiserver", Version: "v1.37.2"}
	for _, want := range []string{"version.gitVersion=v1.37.2", "version.gitMajor=1", "version.gitMinor=37"} {
		if !strings.Contains(c.ldflags(), want) {
			t.Errorf("ldflags %q lack %s", c.ldflags(), want)
		}
	}
}
