// Command imagebuild is `make image`: it builds kedge and winch as static binaries and assembles kedge's container
// image from them without a Docker engine, as a `docker load`-able tarball. The image has the shape the top-level
// Dockerfile gives it (user, entrypoint, ports, the binaries' paths, labels; the test compares the two), and the same
// inputs give the same image digest: fixed file times, owners and order, and a creation time from -created.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// options are imagebuild's flags.
type options struct {
	Go       string // the go command that builds the binaries
	LDFlags  string // -ldflags for both binaries: the Makefile's, with the version stamp
	Arch     string // GOARCH of the binaries and the image
	Image    string // the image's name and tag in the tarball's manifest, e.g. ghcr.io/kedge-proxy/kedge:v1.2.3
	Out      string // the tarball to write
	Labels   labels
	Created  int64  // Unix seconds of every file time and of the image's creation (SOURCE_DATE_EPOCH)
	CACerts  string // the build machine's CA bundle, copied into the image for OIDC issuers and backends
	BinDir   string // prebuilt kedge and winch; empty: build them
	Packages string // the module root holding ./cmd/kedge and ./cmd/winch
}

func main() {
	var o options
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	fs.StringVar(&o.Go, "go", "go", "go command that builds the binaries")
	fs.StringVar(&o.LDFlags, "ldflags", "", "-ldflags for go build (the Makefile's LDFLAGS, with the version stamp)")
	fs.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the binaries and the image")
	fs.StringVar(&o.Image, "image", "ghcr.io/kedge-proxy/kedge:dev", "image name and tag recorded in the tarball")
	fs.StringVar(&o.Out, "out", "bin/kedge-image.tar", "tarball to write (docker load -i, crane push, skopeo docker-archive:)")
	fs.StringVar(&o.Labels.Version, "version", "dev", "org.opencontainers.image.version label")
	fs.StringVar(&o.Labels.Revision, "revision", "", "org.opencontainers.image.revision label (the git commit)")
	fs.StringVar(&o.Labels.Source, "source", "https://github.com/kedge-proxy/kedge", "org.opencontainers.image.source label")
	fs.Int64Var(&o.Created, "created", 0, "Unix time of the image and its files (e.g. the commit's time); the same inputs give the same digest")
	fs.StringVar(&o.CACerts, "ca_certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle (PEM) to put at "+caPath)
	fs.StringVar(&o.BinDir, "bin_dir", "", "directory with static kedge and winch already built; empty: build them")
	fs.StringVar(&o.Packages, "C", ".", "module root to build ./cmd/kedge and ./cmd/winch in")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "imagebuild: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	binDir := o.BinDir
	if binDir == "" {
		tmp, err := os.MkdirTemp("", "kedge-imagebuild-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := buildStatic(ctx, o, tmp); err != nil {
			return err
		}
		binDir = tmp
	}
	bins := map[string][]byte{}
	for _, name := range binaries() {
		path := filepath.Join(binDir, name)
		if err := checkStatic(path, o.Arch); err != nil {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		bins[name] = raw
	}
	ca, err := os.ReadFile(o.CACerts)
	if err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	img, err := assemble(inputs{Binaries: bins, CACerts: ca, Labels: o.Labels, Arch: o.Arch, Created: time.Unix(o.Created, 0).UTC()})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return err
	}
	digest, err := writeTarball(o.Out, o.Image, img)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", o.Out, o.Image, digest)
	return nil
}

// buildStatic builds both binaries into dir exactly as the Dockerfile's build stage does: no cgo, -trimpath, the
// given -ldflags, for linux/arch.
func buildStatic(ctx context.Context, o options, dir string) error {
	args := []string{"build", "-trimpath", "-ldflags", o.LDFlags, "-o", dir + string(filepath.Separator)}
	for _, name := range binaries() {
		args = append(args, "./cmd/"+name)
	}
	cmd := exec.CommandContext(ctx, o.Go, args...)
	cmd.Dir = o.Packages
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", o.Go, strings.Join(args, " "), err)
	}
	return nil
}
