package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestPortsAreKedgeDefaults keeps the image's EXPOSE in step with kedge's default listener ports.
func TestPortsAreKedgeDefaults(t *testing.T) {
	var c config.Config
	c.RegisterFlags(pflag.NewFlagSet("kedge", pflag.ContinueOnError))
	if want := []int{c.HTTPPort, c.HTTPSPort, c.GRPCPort}; !slices.Equal(ports(), want) {
		t.Errorf("image ports %v, kedge's defaults %v", ports(), want)
	}
}

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	Cmd, Args string
}

// dockerfileStages reads ../../Dockerfile as a list of stages (each starting with its FROM).
func dockerfileStages(t *testing.T) [][]instruction {
	t.Helper()
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]instruction
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		in := instruction{Cmd: strings.ToUpper(cmd), Args: strings.Join(strings.Fields(args), " ")}
		cur = ""
		if in.Cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %s before the first FROM", in.Cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and the final one", len(stages))
	}
	return stages
}

// makeVar is the value of a `NAME := value` or `NAME ?= value` line of ../../Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*[:?]?=\s*(.*)$`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("Makefile sets no %s", name)
	}
	return strings.TrimSpace(string(m[1]))
}

// TestDockerfileMatchesImageBuild keeps the Dockerfile and `make image` from drifting apart: the final stage's
// USER, ENTRYPOINT, EXPOSE, copied binaries and label keys equal this tool's; the build stage uses go.mod's Go
// version and builds static binaries with the Makefile's version stamp.
func TestDockerfileMatchesImageBuild(t *testing.T) {
	stages := dockerfileStages(t)
	want := imageShape()
	var got shape
	final := stages[len(stages)-1]
	for _, in := range final {
		switch in.Cmd {
		case "FROM":
			if in.Args != "gcr.io/distroless/static-debian12:nonroot" && !strings.HasPrefix(in.Args, "gcr.io/distroless/static-debian12:nonroot@sha256:") && in.Args != "scratch" {
				t.Errorf("final stage FROM %s, want distroless static-debian12:nonroot (or scratch)", in.Args)
			}
		case "USER":
			got.User = in.Args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.Args), &got.Entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s: want the exec (JSON) form, there is no shell: %v", in.Args, err)
			}
		case "EXPOSE":
			for _, p := range strings.Fields(in.Args) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				got.ExposedPorts = append(got.ExposedPorts, p)
			}
		case "COPY":
			f := strings.Fields(in.Args)
			if len(f) != 3 || !strings.HasPrefix(f[0], "--from=") {
				t.Errorf("final stage COPY %s: want COPY --from=<stage> <binary> <path>", in.Args)
				continue
			}
			got.Files = append(got.Files, f[2])
		case "LABEL":
			for _, m := range regexp.MustCompile(`([A-Za-z0-9_.-]+)=`).FindAllStringSubmatch(in.Args, -1) {
				got.Labels = append(got.Labels, m[1])
			}
		case "RUN", "ADD", "CMD", "SHELL":
			t.Errorf("final stage has %s %s: the image has no shell and only the two binaries are added", in.Cmd, in.Args)
		}
	}
	slices.Sort(got.ExposedPorts)
	slices.Sort(got.Files)
	slices.Sort(got.Labels)
	gotJSON, _ := json.MarshalIndent(got, "", "  ")
	wantJSON, _ := json.MarshalIndent(want, "", "  ")
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("the Dockerfile's final stage is\n%s\nscripts/imagebuild makes\n%s", gotJSON, wantJSON)
	}

	// The build stage: go.mod's Go, no cgo, -trimpath, and the Makefile's LDFLAGS with VERSION from a build arg.
	build := stages[0]
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m := regexp.MustCompile(`(?m)^toolchain go(\S+)$`).FindSubmatch(mod); m != nil {
		goVersion = m
	}
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	if from := build[0].Args; !strings.HasPrefix(from, "golang:"+string(goVersion[1])+"-") && !strings.HasPrefix(from, "golang:"+string(goVersion[1])+" ") {
		t.Errorf("build stage FROM %s, want golang:%s (go.mod's)", from, goVersion[1])
	}
	ldflags := strings.NewReplacer("$(PKG)", makeVar(t, "PKG"), "$(VERSION)", "${VERSION}").Replace(makeVar(t, "LDFLAGS"))
	var run string
	for _, in := range build {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			run = in.Args
		}
	}
	for _, part := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "` + ldflags + `"`, "./cmd/kedge", "./cmd/winch"} {
		if !strings.Contains(run, part) {
			t.Errorf("the build stage's go build %q lacks %s", run, part)
		}
	}
}

// files lists a layer's entries as "name mode uid:gid size".
func files(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name+" "+h.FileInfo().Mode().String()+" "+strconv.Itoa(h.Uid)+":"+strconv.Itoa(h.Gid)+" "+strconv.Itoa(int(h.Size))+" "+h.ModTime.UTC().Format(time.RFC3339))
	}
}

func testInputs(t *testing.T) inputs {
	ca := testutil.NewCA(t)
	certPEM, _ := testutil.EncodePEM(t, ca.Server(t, "ca.example.com"))
	return inputs{
		Binaries: map[string][]byte{"kedge": []byte("kedge binary"), "winch": []byte("winch binary")},
		CACerts:  certPEM,
		Labels:   labels{Version: "v1.2.3", Revision: "0123abc", Source: "https://github.com/kedge-proxy/kedge"},
		Arch:     "amd64",
		Created:  time.Unix(1764900000, 0).UTC(),
	}
}

// TestAssemble checks the image's config and files, and that the same inputs give the same digest while a change
// to any input changes it.
func TestAssemble(t *testing.T) {
	in := testInputs(t)
	img, err := assemble(in)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/kedge"}) || cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("config: user %q, entrypoint %q, platform %s/%s", cfg.Config.User, cfg.Config.Entrypoint, cfg.OS, cfg.Architecture)
	}
	if cfg.Config.Labels["org.opencontainers.image.version"] != "v1.2.3" || cfg.Config.Labels["org.opencontainers.image.revision"] != "0123abc" {
		t.Errorf("labels %v", cfg.Config.Labels)
	}
	if !cfg.Created.Time.Equal(in.Created) {
		t.Errorf("created %v, want %v", cfg.Created, in.Created)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range layers {
		got = append(got, files(t, l)...)
	}
	stamp := " " + in.Created.Format(time.RFC3339)
	want := []string{
		"etc/ drwxr-xr-x 0:0 0", "etc/ssl/ drwxr-xr-x 0:0 0", "etc/ssl/certs/ drwxr-xr-x 0:0 0", "home/ drwxr-xr-x 0:0 0",
		"usr/ drwxr-xr-x 0:0 0", "usr/local/ drwxr-xr-x 0:0 0", "usr/local/bin/ drwxr-xr-x 0:0 0",
		"home/nonroot/ drwx------ 65532:65532 0", "tmp/ dtrwxrwxrwx 0:0 0",
		"etc/passwd -rw-r--r-- 0:0 94", "etc/group -rw-r--r-- 0:0 27",
		"etc/ssl/certs/ca-certificates.crt -rw-r--r-- 0:0 " + strconv.Itoa(len(in.CACerts)),
		"usr/local/bin/kedge -rwxr-xr-x 0:0 12", "usr/local/bin/winch -rwxr-xr-x 0:0 12",
	}
	for i := range want {
		want[i] += stamp
	}
	if !slices.Equal(got, want) {
		t.Errorf("layers hold\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	flat, err := io.ReadAll(mutate.Extract(img))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", "nonroot:x:65532:\n"} {
		if !strings.Contains(string(flat), line) {
			t.Errorf("no %q in the image's /etc/passwd or /etc/group", line)
		}
	}

	digest := func(in inputs) v1.Hash {
		img, err := assemble(in)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := digest(in)
	if again := digest(in); again != first {
		t.Errorf("the same inputs gave %s and %s", first, again)
	}
	later := in
	later.Created = in.Created.Add(time.Second)
	other := in
	other.Binaries = map[string][]byte{"kedge": []byte("kedge binary 2"), "winch": []byte("winch binary")}
	for name, changed := range map[string]inputs{"created": later, "kedge": other} {
		if digest(changed) == first {
			t.Errorf("changing %s kept the digest %s", name, first)
		}
	}

	// The written tarball loads back with the same config and layers. (Its manifest is not kept: a docker-archive
	// tarball has none, so tarball.ImageFromPath makes a Docker-typed one with another digest.)
	out := filepath.Join(t.TempDir(), "image.tar")
	if _, err := writeTarball(out, "ghcr.io/kedge-proxy/kedge:v1.2.3", img); err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err1 := configAndLayers(img)
	g, err2 := configAndLayers(loaded)
	if err1 != nil || err2 != nil || !slices.Equal(g, w) {
		t.Errorf("the tarball has config and layers %v (%v), written %v (%v)", g, err2, w, err1)
	}
}

// configAndLayers is an image's config digest and its layers' diff IDs.
func configAndLayers(img v1.Image) ([]string, error) {
	c, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	ids := []string{c.String()}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		ids = append(ids, d.String())
	}
	return ids, nil
}

func TestAssembleRefuses(t *testing.T) {
	ca := testutil.NewCA(t)
	_, keyPEM := testutil.EncodePEM(t, ca.Server(t, "ca.example.com"))
	tests := []struct {
		name   string
		change func(*inputs)
		want   string
	}{
		{"private key in the CA bundle", func(in *inputs) { in.CACerts = append(in.CACerts, keyPEM...) }, "want only CERTIFICATE"},
		{"empty CA bundle", func(in *inputs) { in.CACerts = []byte("not PEM") }, "no certificate"},
		{"no winch", func(in *inputs) { delete(in.Binaries, "winch") }, "no winch binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInputs(t)
			tt.change(&in)
			if _, err := assemble(in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("assemble: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestCheckStatic builds a small static program (as buildStatic would) and checks it passes, and that the system's
// dynamically linked /bin/true does not.
func TestCheckStatic(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module static\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", "static", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := checkStatic(filepath.Join(dir, "static"), "amd64"); err != nil {
		t.Errorf("static program: %v", err)
	}
	if err := checkStatic(filepath.Join(dir, "static"), "arm64"); err == nil || !strings.Contains(err.Error(), "built for") {
		t.Errorf("amd64 program as arm64: %v, want an architecture error", err)
	}
	if err := checkStatic(filepath.Join(dir, "main.go"), "amd64"); err == nil {
		t.Error("a Go source file passed as a binary")
	}
	if err := checkStatic("/bin/true", runtime.GOARCH); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/true: %v, want dynamically linked", err)
	}
}
