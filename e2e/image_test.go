package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// privateKeyPEM matches the start of any PEM private key ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", ...).
var privateKeyPEM = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----`)

// privateKeys returns the PEM private keys in data other than goproxy's built-in MITM CA key. That one is public (it
// is in goproxy's source) and unused: winch terminates MITM routes with its own CA (pkg/winch/httpforward), but the
// linker keeps goproxy.CA_KEY because goproxy parses it at package initialisation.
func privateKeys(t *testing.T, data []byte) int {
	t.Helper()
	known := bytes.TrimSpace(goproxy.CA_KEY)
	if !privateKeyPEM.Match(known) {
		t.Fatal("goproxy.CA_KEY is not a PEM private key")
	}
	n := 0
	for _, loc := range privateKeyPEM.FindAllIndex(data, -1) {
		if !bytes.HasPrefix(data[loc[0]:], known) {
			n++
		}
	}
	return n
}

// TestImage builds the container image as `make image` does (scripts/imagebuild: static binaries, no Docker engine),
// opens the tarball as `docker load` would read it, checks the config runs kedge as a non-root user, that the layers
// hold exactly the expected files and no key, source or VCS data, and runs the kedge and winch found in the layers.
func TestImage(t *testing.T) {
	// The key detector finds a generated key and lets goproxy's public one pass.
	_, keyPEM := testutil.EncodePEM(t, testutil.NewCA(t).Server(t, "kedge.example.com"))
	if n := privateKeys(t, append(append([]byte("x"), goproxy.CA_KEY...), keyPEM...)); n != 1 {
		t.Fatalf("privateKeys found %d keys, want the generated one", n)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tool := filepath.Join(dir, "imagebuild")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", tool, "../scripts/imagebuild").CombinedOutput(); err != nil {
		t.Fatalf("building scripts/imagebuild: %v\n%s", err, out)
	}
	const version = "v0.0.0-imagetest"
	out := filepath.Join(dir, "kedge-image.tar")
	cmd := exec.CommandContext(ctx, tool, "-C", "..", "-out", out, "-image", "ghcr.io/kedge-proxy/kedge:"+version,
		"-ldflags", "-X github.com/kedge-proxy/kedge/pkg/shared/buildinfo.Version="+version,
		"-version", version, "-revision", "0123456789abcdef0123456789abcdef01234567", "-created", "1764900000")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("imagebuild: %v\n%s", err, msg)
	}

	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatalf("the tarball does not load: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.User != "65532:65532" {
		t.Errorf("User %q, want the non-root 65532:65532", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/kedge"}) || len(c.Cmd) != 0 {
		t.Errorf("Entrypoint %q Cmd %q, want kedge and no arguments", c.Entrypoint, c.Cmd)
	}
	for _, p := range []string{"8080/tcp", "8443/tcp", "8444/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	if c.Labels["org.opencontainers.image.version"] != version || c.Labels["org.opencontainers.image.source"] == "" {
		t.Errorf("labels %v", c.Labels)
	}
	if cfg.OS != "linux" || cfg.Created.Unix() != 1764900000 {
		t.Errorf("os %q, created %v", cfg.OS, cfg.Created)
	}

	// Every file of every layer: the expected set, no key, source or VCS data; the binaries are kept to run.
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	bins := map[string]string{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains("/"+h.Name, "/.git") || strings.HasSuffix(h.Name, ".go") || strings.HasSuffix(h.Name, ".key") || strings.HasSuffix(h.Name, "go.mod") {
				t.Errorf("the image holds %s", h.Name)
			}
			if n := privateKeys(t, data); n > 0 {
				t.Errorf("%s holds %d PEM private keys", h.Name, n)
			}
			if h.Typeflag == tar.TypeReg && path.Dir(h.Name) == "usr/local/bin" {
				if h.Uid == 0 && h.Mode&0o022 != 0 {
					t.Errorf("%s is writable by others: mode %o", h.Name, h.Mode)
				}
				bin := filepath.Join(dir, path.Base(h.Name))
				if err := os.WriteFile(bin, data, 0o755); err != nil {
					t.Fatal(err)
				}
				bins[path.Base(h.Name)] = bin
			}
		}
		rc.Close()
	}
	slices.Sort(names)
	want := []string{"etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt",
		"home/", "home/nonroot/", "tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/kedge", "usr/local/bin/winch"}
	if !slices.Equal(names, want) {
		t.Errorf("the layers hold %q, want %q", names, want)
	}

	for _, name := range []string{"kedge", "winch"} {
		bin, ok := bins[name]
		if !ok {
			t.Errorf("no %s in the image", name)
			continue
		}
		for _, arg := range []string{"--version", "--help"} {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, arg)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Errorf("%s %s from the image: %v\n%s%s", name, arg, err, stdout.String(), stderr.String())
				continue
			}
			if arg == "--version" && !strings.HasPrefix(stdout.String(), version+" ") {
				t.Errorf("%s --version printed %q, want the stamped %s", name, stdout.String(), version)
			}
		}
	}
}
