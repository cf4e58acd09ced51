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
// --kedge_dynamic_routings_enabled, Service discovery. What discovery finds goes to the apply function given to
// run; merging it with the file config is the state's business (see Server.applyDiscovered).
type kube struct {
	cluster *discovery.Cluster    // nil when no Kubernetes API is configured or reachable from a pod
	disc    *discovery.Discoverer // nil unless discovery is enabled
	noAPI   error                 // why cluster is nil
}

// newKube builds the Kubernetes part. It does not talk to the API server. Without any API configuration and
// outside a pod, the k8s resolver reports a clear error and discovery cannot be enabled.
func newKube(cfg config.K8sConfig, log logging.Logger, reg prometheus.Registerer) (*kube, error) {
	k := &kube{}
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

// run runs the informers and, with discovery, hands every discovered config to apply, until ctx is done.
func (k *kube) run(ctx context.Context, apply discovery.Applier) error {
	if k.cluster == nil {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return k.cluster.Run(gctx) })
	if k.disc != nil {
		g.Go(func() error { return k.disc.Run(gctx, apply) })
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
			merged, rejected := config.Merge(file, config.Check(gens))
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
				cluster.Diagnose(gctx)
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
