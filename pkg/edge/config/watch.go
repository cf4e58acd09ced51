package config

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// debounce is how long the files must stay quiet after a change before they are loaded: editors and
// ConfigMap updates produce bursts of events.
const debounce = 200 * time.Millisecond

// configMapData is the symlink that Kubernetes swaps atomically when a mounted ConfigMap changes; the files the
// pod sees are symlinks through it.
const configMapData = "..data"

// Watcher re-loads src when either file changes (fsnotify on the *directories* containing the files, so an atomic
// rename or a Kubernetes ConfigMap "..data" symlink swap is seen; debounce ~200ms) or when Trigger is called (SIGHUP).
// Each successful load is passed to apply; if apply returns an error or the load fails, the running config stays,
// the error is logged with every FieldError, and kedge_config_reloads_total{result="failure"} increments;
// success increments result="success" and sets kedge_config_last_reload_success_timestamp_seconds, and
// kedge_config_last_reload_successful gauge 1/0.
//
// Loads and applies happen one at a time, in order, on the goroutine that calls Run. A document that is a symlink
// into some other directory is re-read when the link (or a ConfigMap's "..data" link) changes, not when the target
// is edited in place; SIGHUP covers that case.
type Watcher struct {
	src      Source
	apply    func(*Dynamic) error
	log      logging.Logger
	trigger  chan struct{} // capacity 1: pending Trigger calls coalesce
	debounce time.Duration

	ready     chan struct{} // closed once Run watches the directories (lets tests avoid racing the first event)
	readyOnce sync.Once

	reloads        *prometheus.CounterVec
	lastSuccessAt  prometheus.Gauge
	lastSuccessful prometheus.Gauge
}

// NewWatcher returns a Watcher for src that hands every valid reload to apply. It assumes the caller has already
// loaded and applied src once, so the reload gauges start as "successful, now". reg may be nil (no metrics
// exported); metrics already registered on reg by an earlier Watcher are shared.
func NewWatcher(src Source, apply func(*Dynamic) error, log logging.Logger, reg prometheus.Registerer) *Watcher {
	w := &Watcher{
		src:      src,
		apply:    apply,
		log:      log,
		trigger:  make(chan struct{}, 1),
		debounce: debounce,
		ready:    make(chan struct{}),
		reloads: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kedge_config_reloads_total",
			Help: "Reloads of the director and backendpool documents, by result (success, failure).",
		}, []string{"result"})),
		lastSuccessAt: register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kedge_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful (re)load of the director and backendpool documents.",
		})),
		lastSuccessful: register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kedge_config_last_reload_successful",
			Help: "1 if the last reload of the director and backendpool documents was applied, 0 if it was rejected.",
		})),
	}
	w.reloads.WithLabelValues("success")
	w.reloads.WithLabelValues("failure")
	w.lastSuccessAt.SetToCurrentTime()
	w.lastSuccessful.Set(1)
	return w
}

// register registers c on reg, or returns the equal collector registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, log logging.Logger, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		log.Error("config: registering reload metrics", logging.FieldError, err)
	}
	return c
}

// Trigger asks Run to reload now. It never blocks; calls made while a reload is pending coalesce into one.
func (w *Watcher) Trigger() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Run watches the directories of src's files and reloads on change or Trigger until ctx is done, then returns nil.
// It does not load at start: the caller loads and applies the initial config itself.
func (w *Watcher) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config: watching files: %w", err)
	}
	defer fw.Close()
	// watched maps each watched directory to the base names of the documents in it.
	watched := map[string]map[string]bool{}
	for _, p := range []string{w.src.DirectorPath, w.src.BackendpoolPath} {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("config: watching %s: %w", p, err)
		}
		dir, base := filepath.Split(abs)
		dir = filepath.Clean(dir)
		if watched[dir] == nil {
			if err := fw.Add(dir); err != nil {
				return fmt.Errorf("config: watching directory %s: %w", dir, err)
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
				return errors.New("config: file watcher closed")
			}
			if relevant(watched, ev) {
				timer.Reset(w.debounce)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return errors.New("config: file watcher closed")
			}
			w.log.Warn("config: file watcher", logging.FieldError, err)
		case <-timer.C:
			w.reload("file change")
		case <-w.trigger:
			w.reload("trigger")
		}
	}
}

// relevant reports whether ev may have changed a document: an event (other than a bare attribute change) on a
// document's name, or on the "..data" symlink of a mounted ConfigMap in a watched directory.
func relevant(watched map[string]map[string]bool, ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	names := watched[filepath.Dir(ev.Name)]
	base := filepath.Base(ev.Name)
	return names != nil && (names[base] || base == configMapData)
}

// reload loads and applies the documents once, keeping the running config on any failure.
func (w *Watcher) reload(reason string) {
	dyn, err := Load(w.src)
	if err != nil {
		w.fail("config reload rejected; keeping the running config", reason, err)
		return
	}
	if err := w.apply(dyn); err != nil {
		w.fail("applying the reloaded config failed; keeping the running config", reason, err)
		return
	}
	w.reloads.WithLabelValues("success").Inc()
	w.lastSuccessAt.SetToCurrentTime()
	w.lastSuccessful.Set(1)
	w.log.Info("config reloaded", "reason", reason, "warnings", len(dyn.Warnings))
}

func (w *Watcher) fail(msg, reason string, err error) {
	w.reloads.WithLabelValues("failure").Inc()
	w.lastSuccessful.Set(0)
	fes := FieldErrors(err)
	if len(fes) == 0 {
		w.log.Error(msg, "reason", reason, logging.FieldError, err)
		return
	}
	for _, fe := range fes {
		w.log.Error("config problem", logging.FieldFile, fe.File, "field", fe.Field, logging.FieldError, fe.Reason)
	}
	w.log.Error(msg, "reason", reason, "problems", len(fes))
}
