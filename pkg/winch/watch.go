package winch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// debounce is how long the files must stay quiet after a change before they are reloaded: editors and ConfigMap
// updates produce bursts of events.
const debounce = 200 * time.Millisecond

// configMapData is the symlink Kubernetes swaps when a mounted ConfigMap changes.
const configMapData = "..data"

// watcher calls reload when one of its files changes or trigger is called. It watches the directories holding the
// files (so an editor's rename-into-place or a ConfigMap symlink swap is seen), debounced.
//
// This is the same pattern as kedge's pkg/edge/config.Watcher, minus its metrics; both belong in one shared package.
type watcher struct {
	paths    []string
	reload   func(reason string)
	log      logging.Logger
	kick     chan struct{} // capacity 1: pending triggers coalesce
	debounce time.Duration
}

func newWatcher(paths []string, reload func(reason string), log logging.Logger) *watcher {
	return &watcher{paths: paths, reload: reload, log: log, kick: make(chan struct{}, 1), debounce: debounce}
}

// trigger asks run to reload now; it never blocks.
func (w *watcher) trigger() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// run watches until ctx is done. Reloads happen on this goroutine, one at a time. Without files to watch it only
// serves triggers.
func (w *watcher) run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("winch: watching config files: %w", err)
	}
	defer func() { _ = fw.Close() }()
	watched := map[string]map[string]bool{} // directory -> base names of the documents in it
	for _, p := range w.paths {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("winch: watching %s: %w", p, err)
		}
		dir, base := filepath.Dir(abs), filepath.Base(abs)
		if watched[dir] == nil {
			if err := fw.Add(dir); err != nil {
				return fmt.Errorf("winch: watching directory %s: %w", dir, err)
			}
			watched[dir] = map[string]bool{}
		}
		watched[dir][base] = true
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return errors.New("winch: config file watcher closed")
			}
			names := watched[filepath.Dir(ev.Name)]
			base := filepath.Base(ev.Name)
			if ev.Op != fsnotify.Chmod && names != nil && (names[base] || base == configMapData) {
				timer.Reset(w.debounce)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return errors.New("winch: config file watcher closed")
			}
			w.log.Warn("config file watcher", logging.FieldError, err)
		case <-timer.C:
			w.reload("file change")
		case <-w.kick:
			w.reload("trigger")
		}
	}
}
