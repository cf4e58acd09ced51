package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/discovery"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// kube is kedge's Kubernetes part: the informers behind the k8s resolver and, with
// --kedge_dynamic_routings_enabled, Service discovery. It also owns the merge of discovered routes with the file
// config: the file watcher and discovery both apply through it, one at a time, so each apply sees the latest of the
// other.
type kube struct {
	cluster *discovery.Cluster    // nil when no Kubernetes API is configured or reachable from a pod
	disc    *discovery.Discoverer // nil unless discovery is enabled
	noAPI   error                 // why cluster is nil
	log     logging.Logger

	mu    sync.Mutex // serialises applies; guards the fields below
	apply func(*config.Dynamic) error
	file  *config.Dynamic    // the file config last applied
	found []config.Generated // the discovered config last applied
}

// newKube builds the Kubernetes part. It does not talk to the API server. Without any API configuration and
// outside a pod, the k8s resolver reports a clear error and discovery cannot be enabled.
func newKube(cfg config.K8sConfig, log logging.Logger, reg prometheus.Registerer) (*kube, error) {
	k := &kube{log: log}
	client, err := discovery.NewClient(cfg, os.Getenv)
	switch {
	case errors.Is(err, discovery.ErrNoAPI) && !cfg.DynamicRoutings:
		k.noAPI = err
		return k, nil
	case err != nil:
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	k.cluster = discovery.NewCluster(client, discovery.ClusterOptions{
		Namespace:        cfg.Namespace,
		CacheSyncTimeout: cfg.CacheSyncTimeout,
	}, log, reg)
	if cfg.DynamicRoutings {
		k.disc = discovery.NewDiscoverer(k.cluster, discoveryOptions(cfg, true), log, reg)
	}
	return k, nil
}

func discoveryOptions(cfg config.K8sConfig, events bool) discovery.Options {
	return discovery.Options{LabelPrefix: cfg.LabelPrefix, DomainSuffix: cfg.ExternalDomainSuffix, Events: events}
}

// sourceFactory is backend.Deps.K8s.
func (k *kube) sourceFactory() backend.SourceFactory {
	if k.cluster == nil {
		return noAPI{k.noAPI}
	}
	return k.cluster
}

// noAPI refuses k8s resolvers, saying why.
type noAPI struct{ err error }

func (n noAPI) Source(backend.Spec) (backend.EndpointSource, error) { return nil, n.err }

// fileApplier returns the apply function for the file watcher: it merges each file config with the discovered
// routes and hands the result to apply. initial is the file config already in force.
func (k *kube) fileApplier(initial *config.Dynamic, apply func(*config.Dynamic) error) func(*config.Dynamic) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.file, k.apply = initial, apply
	return k.applyFile
}

func (k *kube) applyFile(dyn *config.Dynamic) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	merged, rejected := config.Merge(dyn, k.found)
	if err := k.apply(merged); err != nil {
		return err
	}
	k.file = dyn
	for _, r := range rejected {
		k.log.Warn("service skipped by discovery after a config reload", "service", r.Source, logging.FieldError, r.Err)
	}
	return nil
}

// applyDiscovered is discovery's Applier.
func (k *kube) applyDiscovered(gens []config.Generated) ([]config.Rejected, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.apply == nil {
		return nil, errors.New("kubernetes: discovery started before the config was loaded")
	}
	merged, rejected := config.Merge(k.file, gens)
	if err := k.apply(merged); err != nil {
		return nil, err
	}
	k.found = gens
	return rejected, nil
}

// run runs the informers and discovery until ctx is done.
func (k *kube) run(ctx context.Context) error {
	if k.cluster == nil {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return k.cluster.Run(gctx) })
	if k.disc != nil {
		g.Go(func() error { return k.disc.Run(gctx, k.applyDiscovered) })
	}
	return g.Wait()
}

// ready reports whether the Kubernetes caches in use are filled and the first discovered routes applied.
func (k *kube) ready() error {
	switch {
	case k.disc != nil:
		return k.disc.Ready()
	case k.cluster != nil:
		return k.cluster.Ready()
	}
	return nil
}

// Discover prints what discovery makes of the cluster k8s points at, merged with the config documents docs names (if
// any), as one JSON object {"director": {...}, "backendpool": {...}} whose members are documents kedge reads.
// Skipped Services are logged. With once it returns after the first result, or with an error if the Services
// cannot be listed within k8s.CacheSyncTimeout; otherwise it prints again after each change until ctx is done.
// It only reads from the cluster: no Events are raised.
func Discover(ctx context.Context, k8s config.K8sConfig, docs config.Source, log logging.Logger, out io.Writer, once bool) error {
	file, err := config.Load(docs)
	if err != nil {
		return fmt.Errorf("loading config documents:\n%w", err)
	}
	client, err := discovery.NewClient(k8s, os.Getenv)
	if err != nil {
		return err
	}
	cluster := discovery.NewCluster(client, discovery.ClusterOptions{Namespace: k8s.Namespace, CacheSyncTimeout: k8s.CacheSyncTimeout}, log, nil)
	disc := discovery.NewDiscoverer(cluster, discoveryOptions(k8s, false), log, nil)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	printed := make(chan struct{})
	var printOnce sync.Once
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cluster.Run(gctx) })
	g.Go(func() error {
		defer cancel(nil)
		return disc.Run(gctx, func(gens []config.Generated) ([]config.Rejected, error) {
			merged, rejected := config.Merge(file, gens)
			if err := printDocuments(out, merged); err != nil {
				cancel(err)
				return rejected, nil
			}
			printOnce.Do(func() { close(printed) })
			if once {
				cancel(nil)
			}
			return rejected, nil
		})
	})
	if once {
		g.Go(func() error {
			t := time.NewTimer(k8s.CacheSyncTimeout)
			defer t.Stop()
			select {
			case <-t.C:
				why := disc.Ready()
				if why == nil {
					why = errors.New("the result is being printed")
				}
				cancel(fmt.Errorf("no result within %v (--k8s_cache_sync_timeout): %w", k8s.CacheSyncTimeout, why))
			case <-printed:
			case <-gctx.Done():
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// printDocuments writes dyn as {"director": ..., "backendpool": ...}, indented, followed by a newline.
func printDocuments(out io.Writer, dyn *config.Dynamic) error {
	dir, pool, err := config.Documents(dyn)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(struct {
		Director    json.RawMessage `json:"director"`
		Backendpool json.RawMessage `json:"backendpool"`
	}{dir, pool})
	if err != nil {
		return fmt.Errorf("rendering the discovered config: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("rendering the discovered config: %w", err)
	}
	buf.WriteByte('\n')
	_, err = out.Write(buf.Bytes())
	return err
}
