package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

const watchPool = `{"http": {"backends": [{"name": "web", "host": {"dns_name": "web.example.com", "port": 80}}]}}`

// directorFor returns a director document whose only route matches host.
func directorFor(host string) string {
	return `{"http": {"routes": [{"backend_name": "web", "host_matcher": "` + host + `"}]}}`
}

// harness runs a Watcher and records what it applies.
type harness struct {
	w       *Watcher
	applied chan *Dynamic
	applies atomic.Int64 // successful apply calls
	failing atomic.Bool  // makes apply return an error
}

// startWatcher runs a Watcher for src until the test ends and waits until it watches the directories.
func startWatcher(t *testing.T, src Source) *harness {
	t.Helper()
	h := &harness{applied: make(chan *Dynamic, 100)}
	apply := func(d *Dynamic) error {
		if h.failing.Load() {
			return errors.New("apply refused")
		}
		h.applies.Add(1)
		h.applied <- d
		return nil
	}
	h.w = newWatcher(src, apply, logging.Discard(), prometheus.NewRegistry(), 20*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-h.w.files.Ready():
	case err := <-done:
		t.Fatalf("Run ended early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("watcher not ready after 5s")
	}
	return h
}

// waitApplied waits for an applied config whose first HTTP route matches host, skipping earlier ones, and then
// until its reload is counted: the Watcher records a reload's metrics after apply returns.
func (h *harness) waitApplied(t *testing.T, host string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case d := <-h.applied:
			if len(d.HTTPRoutes) > 0 && d.HTTPRoutes[0].Host == host {
				applies := float64(h.applies.Load())
				sharedtest.Eventually(t, "the reload to be counted", func() bool { return h.metric("success") >= applies })
				return
			}
		case <-deadline:
			t.Fatalf("no config with host %q applied within 5s (failures: %v)", host, h.metric("failure"))
		}
	}
}

func (h *harness) metric(result string) float64 {
	return testutil.ToFloat64(h.w.reloads.WithLabelValues(result))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// plainFiles writes both documents into a fresh directory.
func plainFiles(t *testing.T) (Source, string) {
	dir := t.TempDir()
	src := Source{DirectorPath: filepath.Join(dir, "director.json"), BackendpoolPath: filepath.Join(dir, "backendpool.json")}
	writeFile(t, src.DirectorPath, directorFor("old.example.com"))
	writeFile(t, src.BackendpoolPath, watchPool)
	return src, dir
}

func TestWatcherReloadsOnWrite(t *testing.T) {
	t.Parallel()
	src, _ := plainFiles(t)
	h := startWatcher(t, src)
	writeFile(t, src.DirectorPath, directorFor("new.example.com"))
	h.waitApplied(t, "new.example.com")
	if got := h.metric("success"); got < 1 {
		t.Errorf("success reloads = %v, want >= 1", got)
	}
	if got := testutil.ToFloat64(h.w.lastSuccessful); got != 1 {
		t.Errorf("last_reload_successful = %v, want 1", got)
	}
}

func TestWatcherSeesAtomicRename(t *testing.T) {
	t.Parallel()
	src, dir := plainFiles(t)
	h := startWatcher(t, src)
	tmp := filepath.Join(dir, ".director.json.tmp")
	writeFile(t, tmp, directorFor("renamed.example.com"))
	if err := os.Rename(tmp, src.DirectorPath); err != nil {
		t.Fatal(err)
	}
	h.waitApplied(t, "renamed.example.com")
}

// TestWatcherSeesConfigMapSwap mimics how the kubelet updates a mounted ConfigMap: the files are symlinks through
// "..data", which is atomically re-pointed at a new timestamped directory.
func TestWatcherSeesConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := func(name, host string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "director.json"), directorFor(host))
		writeFile(t, filepath.Join(dir, name, "backendpool.json"), watchPool)
	}
	symlink := func(target, link string) {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_00_00_00.1", "old.example.com")
	symlink("..2026_01_01_00_00_00.1", "..data")
	symlink("..data/director.json", "director.json")
	symlink("..data/backendpool.json", "backendpool.json")
	src := Source{DirectorPath: filepath.Join(dir, "director.json"), BackendpoolPath: filepath.Join(dir, "backendpool.json")}
	if _, err := Load(src); err != nil {
		t.Fatal(err)
	}
	h := startWatcher(t, src)

	version("..2026_01_01_00_01_00.2", "swapped.example.com")
	symlink("..2026_01_01_00_01_00.2", "..data_tmp")
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	h.waitApplied(t, "swapped.example.com")
}

func TestWatcherKeepsConfigOnInvalidDocument(t *testing.T) {
	t.Parallel()
	src, _ := plainFiles(t)
	h := startWatcher(t, src)
	writeFile(t, src.DirectorPath, `{"http": {"routes": [{"backend_name": "missing"}]}}`)
	sharedtest.Eventually(t, "a failed reload", func() bool { return h.metric("failure") >= 1 })
	select {
	case d := <-h.applied:
		t.Fatalf("invalid config applied: %+v", d)
	default:
	}
	if got := testutil.ToFloat64(h.w.lastSuccessful); got != 0 {
		t.Errorf("last_reload_successful = %v, want 0", got)
	}
	if got := h.metric("success"); got != 0 {
		t.Errorf("success reloads = %v, want 0", got)
	}

	writeFile(t, src.DirectorPath, directorFor("fixed.example.com"))
	h.waitApplied(t, "fixed.example.com")
	if got := testutil.ToFloat64(h.w.lastSuccessful); got != 1 {
		t.Errorf("last_reload_successful = %v, want 1", got)
	}
}

func TestWatcherCountsApplyFailure(t *testing.T) {
	t.Parallel()
	src, _ := plainFiles(t)
	h := startWatcher(t, src)
	h.failing.Store(true)
	before := testutil.ToFloat64(h.w.lastSuccessAt)
	h.w.Trigger()
	sharedtest.Eventually(t, "a failed apply", func() bool { return h.metric("failure") == 1 })
	if got := testutil.ToFloat64(h.w.lastSuccessful); got != 0 {
		t.Errorf("last_reload_successful = %v, want 0", got)
	}
	if got := testutil.ToFloat64(h.w.lastSuccessAt); got != before {
		t.Errorf("last success timestamp moved from %v to %v on a failure", before, got)
	}
}

func TestWatcherTrigger(t *testing.T) {
	t.Parallel()
	// Inline documents only: there is nothing to watch, Trigger is the only way to reload.
	h := startWatcher(t, Source{DirectorInline: directorFor("inline.example.com"), BackendpoolInline: watchPool})
	h.w.Trigger()
	h.waitApplied(t, "inline.example.com")
	if got := h.metric("success"); got != 1 {
		t.Errorf("success reloads = %v, want 1", got)
	}
}

func TestNewWatcherSharesMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a := NewWatcher(Source{}, nil, logging.Discard(), reg)
	b := NewWatcher(Source{}, nil, logging.Discard(), reg)
	a.reloads.WithLabelValues("success").Inc()
	if got := testutil.ToFloat64(b.reloads.WithLabelValues("success")); got != 1 {
		t.Errorf("second watcher's counter = %v, want the shared 1", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 4 {
		t.Errorf("gathered %d series (%v), want 4", n, err)
	}
}
