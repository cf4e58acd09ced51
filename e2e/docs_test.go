package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDocsListEveryKedgeFlag fails when a flag shown by `kedge --help` is documented nowhere in docs/.
func TestDocsListEveryKedgeFlag(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "kedge"), "--help").Output()
	if err != nil {
		t.Fatalf("kedge --help: %v", err)
	}
	var docs strings.Builder
	files, _ := filepath.Glob("../docs/*.md")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(b)
	}
	flags := regexp.MustCompile(`(?m)^\s+(--[a-z0-9_-]+)`).FindAllStringSubmatch(string(out), -1)
	if len(flags) < 20 {
		t.Fatalf("found only %d flags in --help output:\n%s", len(flags), out)
	}
	for _, f := range flags {
		if !strings.Contains(docs.String(), "`"+f[1]) {
			t.Errorf("flag %s is not documented in docs/*.md", f[1])
		}
	}
}

// TestDemo runs `make demo`'s program once (--once) against the binaries under test, so the README's first command
// and every command the demo shows keep working. --base_port=0 gives it free ports (never the documented defaults,
// which a developer's own kedge may hold); the rewritten documents and the printed commands then name those ports.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./demo", "--once", "--base_port=0", "--bin", binDir, "--examples", "../docs/examples")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	want := []string{"All demo steps passed.", "hello from the demo backend", "v1.31.0-kedge-demo", "hello over gRPC",
		"files: ", "kedge --server_bind_address=127.0.0.1", "--server_http_tls_port="}
	if _, err := exec.LookPath("curl"); err == nil {
		want = append(want, "no Proxy-Authorization header") // the denied request (step 4) ran
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("demo output lacks %q:\n%s", w, out)
		}
	}
}
