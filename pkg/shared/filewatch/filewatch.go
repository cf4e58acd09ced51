// Package filewatch tells a program when its config files change: it watches the directories holding the files
// (so an editor's rename into place and a Kubernetes ConfigMap "..data" symlink swap are seen), waits for a burst of
// events to settle, and calls one reload function, serialised, also when asked to directly (SIGHUP).
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// DefaultDebounce is how long the files must stay quiet after a change before reload is called: editors and
// ConfigMap updates produce bursts of events.
const DefaultDebounce = 200 * time.Millisecond

// Reasons passed to the reload function.
const (
	// ReasonFileChange: a watched file (or a ConfigMap's "..data" link beside it) changed.
	ReasonFileChange = "file change"
	// ReasonTrigger: Trigger was called.
	ReasonTrigger = "trigger"
)

// configMapData is the symlink that Kubernetes swaps atomically when a mounted ConfigMap changes; the files the
// pod sees are symlinks through it.
const configMapData = "..data"

// Config says what a Watcher watches.
type Config struct {
	// Paths are the files to watch; empty entries are skipped. Without any, only Trigger calls reload.
	Paths []string
	// Debounce is how long the files must stay quiet after a change before reload is called; 0 means
	// DefaultDebounce.
	Debounce time.Duration
}

// Watcher calls reload when one of its files changes or Trigger is called. reload runs on the goroutine that
// calls Run, one call at a time and in order; it never overlaps with itself.
//
// A file that is a symlink into some other directory is seen to change when the link (or a ConfigMap's "..data"
// link) changes, not when the target is edited in place; Trigger covers that case.
type Watcher struct {
	paths     []string
	debounce  time.Duration
	reload    func(reason string)
	log       logging.Logger
	trigger   chan struct{} // capacity 1: pending Trigger calls coalesce
	ready     chan struct{} // closed once Run watches the directories
	readyOnce sync.Once
}

// New returns a Watcher that calls reload with ReasonFileChange or ReasonTrigger. It watches nothing until Run.
func New(cfg Config, reload func(reason string), log logging.Logger) *Watcher {
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	return &Watcher{
		paths:    cfg.Paths,
		debounce: cfg.Debounce,
		reload:   reload,
		log:      log,
		trigger:  make(chan struct{}, 1),
		ready:    make(chan struct{}),
	}
}

// Trigger asks Run to call reload now. It never blocks; calls made while one is pending coalesce into one.
func (w *Watcher) Trigger() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Ready is closed once Run watches the directories, so that a change made after it is seen.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Run watches the directories of the files and calls reload on change or Trigger until ctx is done, then returns
// nil. It does not call reload at start: the caller loads its files itself before. Call Run once.
func (w *Watcher) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("filewatch: %w", err)
	}
	defer func() { _ = fw.Close() }()
	// watched maps each watched directory to the base names of the files in it.
	watched := map[string]map[string]bool{}
	for _, p := range w.paths {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("filewatch: watching %s: %w", p, err)
		}
		dir, base := filepath.Dir(abs), filepath.Base(abs)
		if watched[dir] == nil {
			if err := fw.Add(dir); err != nil {
				return fmt.Errorf("filewatch: watching directory %s: %w", dir, err)
			}
			watched[dir] = map[string]bool{}
		}
		watched[dir][base] = true
	}
	w.readyOnce.Do(func() { close(w.ready) })

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return errors.New("filewatch: watcher closed")
			}
			if relevant(watched, ev) {
				timer.Reset(w.debounce)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return errors.New("filewatch: watcher closed")
			}
			w.log.Warn("filewatch: file change events may have been lost; send SIGHUP to reload the config files",
				logging.FieldError, err)
		case <-timer.C:
			w.reload(ReasonFileChange)
		case <-w.trigger:
			w.reload(ReasonTrigger)
		}
	}
}

// relevant reports whether ev may have changed a watched file: an event (other than a bare attribute change) on a
// file's name, or on the "..data" symlink of a mounted ConfigMap in a watched directory.
func relevant(watched map[string]map[string]bool, ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	names := watched[filepath.Dir(ev.Name)]
	base := filepath.Base(ev.Name)
	return names != nil && (names[base] || base == configMapData)
}
