package config

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/filewatch"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// Watcher re-loads src when either file changes or when Trigger is called (SIGHUP); pkg/shared/filewatch does the
// watching (the files' directories, so an atomic rename or a Kubernetes ConfigMap "..data" symlink swap is seen;
// debounced). Each successful load is passed to apply; if apply returns an error or the load fails, the running
// config stays, the error is logged with every FieldError, and kedge_config_reloads_total{result="failure"}
// increments; success increments result="success" and sets kedge_config_last_reload_success_timestamp_seconds, and
// kedge_config_last_reload_successful gauge 1/0.
//
// Loads and applies happen one at a time, in order, on the goroutine that calls Run. The gauges are set before the
// counter moves, so whoever sees the counter change also sees the gauges of that reload.
type Watcher struct {
	src   Source
	apply func(*Dynamic) error
	log   logging.Logger
	files *filewatch.Watcher

	reloads        *prometheus.CounterVec
	lastSuccessAt  prometheus.Gauge
	lastSuccessful prometheus.Gauge
}

// NewWatcher returns a Watcher for src that hands every valid reload to apply. It assumes the caller has already
// loaded and applied src once, so the reload gauges start as "successful, now". reg may be nil (no metrics
// exported); metrics already registered on reg by an earlier Watcher are shared.
func NewWatcher(src Source, apply func(*Dynamic) error, log logging.Logger, reg prometheus.Registerer) *Watcher {
	return newWatcher(src, apply, log, reg, filewatch.DefaultDebounce)
}

func newWatcher(src Source, apply func(*Dynamic) error, log logging.Logger, reg prometheus.Registerer, debounce time.Duration) *Watcher {
	w := &Watcher{src: src, apply: apply, log: log}
	w.files = filewatch.New(filewatch.Config{Paths: []string{src.DirectorPath, src.BackendpoolPath}, Debounce: debounce},
		w.reload, log)
	var errs [3]error
	w.reloads, errs[0] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_config_reloads_total",
		Help: "Reloads of the director and backendpool documents, by result (success, failure).",
	}, []string{"result"}))
	w.lastSuccessAt, errs[1] = collector.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kedge_config_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful (re)load of the director and backendpool documents.",
	}))
	w.lastSuccessful, errs[2] = collector.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kedge_config_last_reload_successful",
		Help: "1 if the last reload of the director and backendpool documents was applied, 0 if it was rejected.",
	}))
	if err := errors.Join(errs[:]...); err != nil {
		log.Error("config: registering reload metrics", logging.FieldError, err)
	}
	w.reloads.WithLabelValues("success")
	w.reloads.WithLabelValues("failure")
	w.lastSuccessAt.SetToCurrentTime()
	w.lastSuccessful.Set(1)
	return w
}

// Trigger asks Run to reload now. It never blocks; calls made while a reload is pending coalesce into one.
func (w *Watcher) Trigger() { w.files.Trigger() }

// Run watches the directories of src's files and reloads on change or Trigger until ctx is done, then returns nil.
// It does not load at start: the caller loads and applies the initial config itself.
func (w *Watcher) Run(ctx context.Context) error { return w.files.Run(ctx) }

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
	w.lastSuccessAt.SetToCurrentTime()
	w.lastSuccessful.Set(1)
	w.reloads.WithLabelValues("success").Inc() // last: see the Watcher's doc
	w.log.Info("config reloaded", "reason", reason, "warnings", len(dyn.Warnings))
}

func (w *Watcher) fail(msg, reason string, err error) {
	w.lastSuccessful.Set(0)
	w.reloads.WithLabelValues("failure").Inc() // after the gauge: see the Watcher's doc
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
