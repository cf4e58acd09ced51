package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 5 * time.Second

// start runs a Watcher until the test ends and waits until it watches its directories.
func start(t *testing.T, cfg Config, reload func(string)) *Watcher {
	t.Helper()
	w := New(cfg, reload, logging.Discard())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("Run ended early: %v", err)
	case <-time.After(wait):
		t.Fatal("watcher not ready")
	}
	return w
}

// next returns the reason of the next reload.
func next(t *testing.T, reasons <-chan string) string {
	t.Helper()
	select {
	case r := <-reasons:
		return r
	case <-time.After(wait):
		t.Fatal("no reload")
		return ""
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReloadsOnChange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(t *testing.T, dir, file string)
	}{
		{"write in place", func(t *testing.T, _, file string) { write(t, file, "2") }},
		{"rename into place", func(t *testing.T, dir, file string) {
			write(t, filepath.Join(dir, ".tmp"), "2")
			if err := os.Rename(filepath.Join(dir, ".tmp"), file); err != nil {
				t.Fatal(err)
			}
		}},
		{"remove", func(t *testing.T, _, file string) {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		}},
		{"ConfigMap ..data swap", func(t *testing.T, dir, _ string) {
			if err := os.Symlink(".", filepath.Join(dir, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			file := filepath.Join(dir, "doc.yaml")
			write(t, file, "1")
			reasons := make(chan string, 10)
			start(t, Config{Paths: []string{"", file}, Debounce: 10 * time.Millisecond}, func(r string) { reasons <- r })
			tt.change(t, dir, file)
			if got := next(t, reasons); got != ReasonFileChange {
				t.Errorf("reason = %q, want %q", got, ReasonFileChange)
			}
		})
	}
}

// TestDebounce writes a burst of changes within the debounce time: they make one reload.
func TestDebounce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "doc.yaml")
	write(t, file, "0")
	reasons := make(chan string, 100)
	w := start(t, Config{Paths: []string{file}, Debounce: 300 * time.Millisecond}, func(r string) { reasons <- r })
	for i := range 20 {
		write(t, file, strings.Repeat("x", i))
	}
	if got := next(t, reasons); got != ReasonFileChange {
		t.Fatalf("reason = %q, want %q", got, ReasonFileChange)
	}
	w.Trigger()
	if got := next(t, reasons); got != ReasonTrigger {
		t.Errorf("after the burst's reload, reason = %q, want only the trigger's", got)
	}
}

// TestTriggerCoalescesAndSerialises triggers many times while a reload runs: the triggers make one more reload,
// and reloads never overlap.
func TestTriggerCoalescesAndSerialises(t *testing.T) {
	t.Parallel()
	var inFlight, overlaps, calls atomic.Int32
	started := make(chan struct{})
	release := make(chan struct{})
	ctx := t.Context() // done before start's cleanup waits for Run, so that a failed test does not hang
	w := start(t, Config{}, func(string) {
		if inFlight.Add(1) > 1 {
			overlaps.Add(1)
		}
		calls.Add(1)
		defer inFlight.Add(-1)
		select {
		case started <- struct{}{}:
		case <-ctx.Done():
			return
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	waitStarted := func(what string) {
		t.Helper()
		select {
		case <-started:
		case <-time.After(wait):
			t.Fatal(what)
		}
	}
	w.Trigger()
	waitStarted("the first trigger made no reload")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				w.Trigger()
			}
		})
	}
	wg.Wait()
	release <- struct{}{}
	waitStarted("the pending triggers made no reload") // the one reload they coalesced into
	release <- struct{}{}
	w.Trigger()
	waitStarted("a later trigger made no reload")
	release <- struct{}{}
	if got := calls.Load(); got != 3 {
		t.Errorf("%d reloads, want 3 (200 triggers during a reload coalesce into one)", got)
	}
	if overlaps.Load() != 0 {
		t.Errorf("%d reloads overlapped", overlaps.Load())
	}
}

func TestRunFailsForMissingDirectory(t *testing.T) {
	t.Parallel()
	w := New(Config{Paths: []string{filepath.Join(t.TempDir(), "gone", "doc.yaml")}}, func(string) {}, logging.Discard())
	err := w.Run(t.Context())
	if err == nil || !strings.HasPrefix(err.Error(), "filewatch: watching directory") {
		t.Errorf("Run = %v, want a watching-directory error", err)
	}
}

func TestRelevantEvents(t *testing.T) {
	t.Parallel()
	watched := map[string]map[string]bool{"/etc/kedge": {"director.json": true, "backendpool.yaml": true}}
	tests := []struct {
		ev   fsnotify.Event
		want bool
	}{
		{fsnotify.Event{Name: "/etc/kedge/director.json", Op: fsnotify.Write}, true},
		{fsnotify.Event{Name: "/etc/kedge/backendpool.yaml", Op: fsnotify.Create}, true},
		{fsnotify.Event{Name: "/etc/kedge/director.json", Op: fsnotify.Remove}, true},
		{fsnotify.Event{Name: "/etc/kedge/..data", Op: fsnotify.Create}, true},
		{fsnotify.Event{Name: "/etc/kedge/director.json", Op: fsnotify.Chmod}, false},
		{fsnotify.Event{Name: "/etc/kedge/other.json", Op: fsnotify.Write}, false},
		{fsnotify.Event{Name: "/etc/other/director.json", Op: fsnotify.Write}, false},
		{fsnotify.Event{Name: "/etc/kedge/..data_tmp", Op: fsnotify.Create}, false},
	}
	for _, tt := range tests {
		if got := relevant(watched, tt.ev); got != tt.want {
			t.Errorf("relevant(%v) = %v, want %v", tt.ev, got, tt.want)
		}
	}
}
