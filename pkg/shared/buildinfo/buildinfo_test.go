package buildinfo_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
)

func TestGetDefaults(t *testing.T) {
	t.Parallel()
	info := buildinfo.Get()
	if info.Version != "dev" {
		t.Errorf("Version = %q, want dev (no -ldflags in go test)", info.Version)
	}
	if info.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", info.GoVersion, runtime.Version())
	}
}

func TestInfoJSONKeepsOriginalKey(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(buildinfo.Info{Version: "v1", GoVersion: "go1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"build_version":"v1","go_version":"go1","revision":""}`; got != want {
		t.Errorf("json = %s, want %s", got, want)
	}
}

func TestInfoString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		info buildinfo.Info
		want string
	}{
		{buildinfo.Info{Version: "dev", GoVersion: "go1.26.8"}, "dev (go1.26.8)"},
		{buildinfo.Info{Version: "v1", GoVersion: "go1", Revision: "abc"}, "v1 (go1, revision abc)"},
		{buildinfo.Info{Version: "v1", GoVersion: "go1", Revision: "abc", Modified: true}, "v1 (go1, revision abc, modified)"},
	}
	for _, tt := range tests {
		if got := tt.info.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

// TestLdflagsSetVersion builds a tiny binary the way the Makefile does and checks that the linker flag lands.
func TestLdflagsSetVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	t.Parallel()
	info, _ := buildAndRun(t, "-ldflags", "-X github.com/kedge-proxy/kedge/pkg/shared/buildinfo.Version=v9.8.7-test")
	if info.Version != "v9.8.7-test" {
		t.Errorf("Version = %q, want v9.8.7-test", info.Version)
	}
	if info.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", info.GoVersion, runtime.Version())
	}
}

// TestVersionFromModule builds a binary without the linker flag (as go install does) and checks that the version is
// the main module's version the toolchain recorded in it (go version -m), or "dev" where it recorded none.
func TestVersionFromModule(t *testing.T) {
	t.Parallel()
	info, out := buildAndRun(t)
	meta, err := exec.CommandContext(t.Context(), filepath.Join(runtime.GOROOT(), "bin", "go"), "version", "-m", out).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	want := ""
	for _, line := range strings.Split(string(meta), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/kedge-proxy/kedge" {
			want = f[2]
		}
	}
	if want == "" || want == "(devel)" {
		want = "dev"
	}
	if info.Version != want {
		t.Errorf("Version = %q, want the module version %q (go version -m:\n%s)", info.Version, want, meta)
	}
}

// buildAndRun builds testdata/printversion with go build's extra args and returns what it prints and its path.
func buildAndRun(t *testing.T, args ...string) (buildinfo.Info, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "printversion")
	build := exec.CommandContext(t.Context(), filepath.Join(runtime.GOROOT(), "bin", "go"),
		append(append([]string{"build"}, args...), "-o", out, "./testdata/printversion")...)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := exec.CommandContext(t.Context(), out).Output()
	if err != nil {
		t.Fatalf("running %s: %v", out, err)
	}
	var info buildinfo.Info
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("decoding %q: %v", b, err)
	}
	return info, out
}
