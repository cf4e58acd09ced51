// Package kubeenv runs a real Kubernetes control plane on loopback for tests: etcd and kube-apiserver, built from
// the Go module proxy once per pinned version into a cache directory outside the checkout, started on ephemeral
// ports with generated keys and an admin token, and stopped again. The versions are pinned in one place each: the
// go.mod of build/etcd and of build/kube-apiserver.
package kubeenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// Component is one binary of the control plane: which module builds it at which version, and where it is cached.
type Component struct {
	Name    string // "etcd" or "kube-apiserver": the binary's and the build directory's name
	Module  string // the module whose version names the build (go.etcd.io/etcd/server/v3, k8s.io/kubernetes)
	Version string // that module's version in the build directory's go.mod, e.g. v1.37.2
	dir     string // the build module's directory
}

// components lists the binaries and the module each one's version is read from.
var components = []struct{ name, module string }{
	{"etcd", "go.etcd.io/etcd/server/v3"},
	{"kube-apiserver", "k8s.io/kubernetes"},
}

// sourceDir is this package's directory in the checkout: the build modules live under it.
func sourceDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", errors.New("kubeenv: cannot locate the package's source (built with -trimpath?)")
	}
	return filepath.Dir(file), nil
}

// Components reads the pinned versions from the build modules' go.mod files.
func Components() ([]Component, error) {
	src, err := sourceDir()
	if err != nil {
		return nil, err
	}
	var out []Component
	for _, c := range components {
		dir := filepath.Join(src, "build", c.name)
		v, err := requiredVersion(filepath.Join(dir, "go.mod"), c.module)
		if err != nil {
			return nil, err
		}
		out = append(out, Component{Name: c.name, Module: c.module, Version: v, dir: dir})
	}
	return out, nil
}

// requiredVersion returns the version of module in the require directives of the go.mod at path.
func requiredVersion(path, module string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kubeenv: %w", err)
	}
	defer f.Close()
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
		case fields[0] == "require" && len(fields) == 2 && fields[1] == "(":
			inBlock = true
		case inBlock && fields[0] == ")":
			inBlock = false
		case inBlock && len(fields) == 2 && fields[0] == module:
			return fields[1], nil
		case !inBlock && fields[0] == "require" && len(fields) == 3 && fields[1] == module:
			return fields[2], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("kubeenv: reading %s: %w", path, err)
	}
	return "", fmt.Errorf("kubeenv: %s does not require %s", path, module)
}

// CacheDir is ${XDG_CACHE_HOME:-$HOME/.cache}/kedge/kube, where the binaries are kept between runs.
func CacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kubeenv: no cache directory: %w", err)
	}
	return filepath.Join(base, "kedge", "kube"), nil
}

// Path is where the component's binary is cached: <CacheDir>/<name>-<version>/<name>.
func (c Component) Path() (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, c.Name+"-"+c.Version, c.Name), nil
}

// Cached reports whether the component's binary is in the cache.
func (c Component) Cached() bool {
	p, err := c.Path()
	if err != nil {
		return false
	}
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// ldflags stamps kube-apiserver with its version, as the Kubernetes release build does (/version, kubectl version
// and version skew checks read it). etcd's version is a constant of its module.
func (c Component) ldflags() string {
	flags := "-s -w"
	if c.Name == "kube-apiserver" {
		major, rest, _ := strings.Cut(strings.TrimPrefix(c.Version, "v"), ".")
		minor, _, _ := strings.Cut(rest, ".")
		const pkg = "k8s.io/component-base/version."
		flags += fmt.Sprintf(" -X %sgitVersion=%s -X %sgitMajor=%s -X %sgitMinor=%s -X %sgitTreeState=clean",
			pkg, c.Version, pkg, major, pkg, minor, pkg)
	}
	return flags
}

// Build makes sure the binary is cached and returns its path. A missing binary is built from the module proxy
// (kube-apiserver: 8-27 minutes cold and ~3 GB of memory in the linker) into a fresh directory that is renamed into
// place, so that an interrupted build leaves nothing behind and concurrent builds cannot mix. The go command's
// output goes to log.
func (c Component) Build(ctx context.Context, log io.Writer) (string, error) {
	final, err := c.Path()
	if err != nil {
		return "", err
	}
	if c.Cached() {
		return final, nil
	}
	cache := filepath.Dir(filepath.Dir(final))
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("kubeenv: %w", err)
	}
	// One build at a time per cache: a second process waits and then finds the binary.
	unlock, err := lockFile(filepath.Join(cache, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if c.Cached() {
		return final, nil
	}
	tmp, err := os.MkdirTemp(cache, ".build-"+c.Name+"-")
	if err != nil {
		return "", fmt.Errorf("kubeenv: %w", err)
	}
	defer os.RemoveAll(tmp) // after a successful rename there is nothing left to remove
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", c.ldflags(), "-o", filepath.Join(tmp, c.Name), ".")
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "GOWORK=off") // go.sum of the build module pins every dependency
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kubeenv: building %s %s in %s: %w", c.Name, c.Version, c.dir, err)
	}
	_ = os.Chmod(tmp, 0o755) // MkdirTemp makes it private
	if err := os.Rename(tmp, filepath.Dir(final)); err != nil {
		return "", fmt.Errorf("kubeenv: installing %s: %w", c.Name, err)
	}
	return final, nil
}

// lockFile takes an exclusive advisory lock on path, waiting for it; the returned function releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kubeenv: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("kubeenv: locking %s: %w", path, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// Warm builds every missing binary and returns the paths by component name.
func Warm(ctx context.Context, log io.Writer) (map[string]string, error) {
	cs, err := Components()
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, c := range cs {
		if !c.Cached() {
			fmt.Fprintf(log, "kubeenv: building %s %s into the cache (once per version)\n", c.Name, c.Version)
		}
		p, err := c.Build(ctx, log)
		if err != nil {
			return nil, err
		}
		paths[c.Name] = p
	}
	return paths, nil
}

// Cached reports whether every binary is in the cache, so that Start will not build.
func Cached() (bool, error) {
	cs, err := Components()
	if err != nil {
		return false, err
	}
	for _, c := range cs {
		if !c.Cached() {
			return false, nil
		}
	}
	return true, nil
}
