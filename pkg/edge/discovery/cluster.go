// Package discovery is kedge's Kubernetes side: shared informers on the API server, the k8s resolver (a
// backend.SourceFactory whose sources follow the EndpointSlices of a Service), and Service discovery (Services
// labelled <prefix>kedge-exposed: "true" turned into routes and backends). It is the only kedge package that imports
// client-go.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// DefaultCacheSyncTimeout is used when ClusterOptions.CacheSyncTimeout is zero.
const DefaultCacheSyncTimeout = 30 * time.Second

// lastAppliedAnnotation is kubectl's copy of the whole object; informers need not keep it.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// ClusterOptions tunes a Cluster.
type ClusterOptions struct {
	// Namespace, if set, limits every informer (and so the k8s resolver and discovery) to one namespace.
	Namespace string
	// CacheSyncTimeout is how long Run waits for an informer's first list before it logs why the cache is not
	// filled (and again after each further period); default DefaultCacheSyncTimeout.
	CacheSyncTimeout time.Duration
}

// Cluster watches one Kubernetes cluster through shared informers (resync 0, managed fields stripped). Informers
// are registered on first use (the first k8s resolver, or discovery) and started by Run, so a kedge that uses
// neither never talks to the API server.
type Cluster struct {
	client  kubernetes.Interface
	log     logging.Logger
	opts    ClusterOptions
	factory informers.SharedInformerFactory
	metrics *metrics

	startReq chan struct{} // capacity 1: asks Run to start informers registered since it last looked

	mu       sync.Mutex // guards the fields below, and is held while informers are registered or started
	watched  []*watched
	slices   *sliceIndex               // nil until the k8s resolver is first used
	services cache.SharedIndexInformer // nil until discovery is first used
}

// watched is one registered informer.
type watched struct {
	resource string
	inf      cache.SharedIndexInformer
	lastErr  atomic.Pointer[string] // the last watch error, for the "not synced" reason
}

// NewCluster returns a Cluster on client. Nothing talks to the API server before Run.
func NewCluster(client kubernetes.Interface, opts ClusterOptions, log logging.Logger, reg prometheus.Registerer) *Cluster {
	if opts.CacheSyncTimeout <= 0 {
		opts.CacheSyncTimeout = DefaultCacheSyncTimeout
	}
	if log == nil {
		log = logging.Discard()
	}
	factoryOpts := []informers.SharedInformerOption{informers.WithTransform(stripObject)}
	if opts.Namespace != "" {
		factoryOpts = append(factoryOpts, informers.WithNamespace(opts.Namespace))
	}
	return &Cluster{
		client:   client,
		log:      log,
		opts:     opts,
		factory:  informers.NewSharedInformerFactoryWithOptions(client, 0, factoryOpts...),
		metrics:  newMetrics(reg, log),
		startReq: make(chan struct{}, 1),
	}
}

// stripObject drops what kedge never reads from cached objects: managed fields and kubectl's last-applied copy.
func stripObject(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastAppliedAnnotation] != "" {
			delete(a, lastAppliedAnnotation)
		}
	}
	return obj, nil
}

// register adds inf to the informers Run starts; c.mu must be held, and inf must not have been started.
func (c *Cluster) register(resource string, inf cache.SharedIndexInformer) {
	w := &watched{resource: resource, inf: inf}
	err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return // a watch that ended normally; the informer resumes it
		}
		msg := err.Error()
		if prev := w.lastErr.Swap(&msg); prev == nil || *prev != msg {
			c.log.Warn("kubernetes list/watch failed; retrying", "resource", resource, logging.FieldError, err)
		} else {
			c.log.Debug("kubernetes list/watch failed; retrying", "resource", resource, logging.FieldError, err)
		}
	})
	if err != nil {
		c.log.Debug("kubernetes: keeping the default watch error handler", "resource", resource, logging.FieldError, err)
	}
	c.watched = append(c.watched, w)
	select {
	case c.startReq <- struct{}{}:
	default:
	}
}

// Run starts the registered informers, and those registered later, and keeps them running until ctx is done; it
// then stops them and returns nil. For each informer whose first list takes longer than CacheSyncTimeout it logs
// why (the last list/watch error), again after each further period; Ready reports the same until it is filled.
func (c *Cluster) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		c.factory.Shutdown() // ctx is done, so the informers are stopping; this waits for them
		wg.Wait()
	}()
	started := 0
	for {
		c.mu.Lock()
		pending := slices.Clone(c.watched[started:])
		started = len(c.watched)
		if len(pending) > 0 {
			c.factory.Start(ctx.Done())
		}
		c.mu.Unlock()
		for _, w := range pending {
			wg.Go(func() { c.awaitSync(ctx, w) })
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.startReq:
		}
	}
}

// awaitSync logs when w's cache is filled, or why it is not after each CacheSyncTimeout.
func (c *Cluster) awaitSync(ctx context.Context, w *watched) {
	start := time.Now()
	timer := time.NewTimer(c.opts.CacheSyncTimeout)
	defer timer.Stop()
	for {
		select {
		case <-w.inf.HasSyncedChecker().Done():
			c.log.Info("kubernetes cache filled", "resource", w.resource, "objects", len(w.inf.GetStore().ListKeys()),
				logging.FieldDuration, time.Since(start).Round(time.Millisecond))
			return
		case <-ctx.Done():
			return
		case <-timer.C:
			c.Diagnose(ctx)
			c.log.Error("kubernetes cache not filled yet; kedge stays unready until it is", "resource", w.resource,
				"waited", time.Since(start).Round(time.Second), "reason", w.reason())
			timer.Reset(c.opts.CacheSyncTimeout)
		}
	}
}

// probeTimeout bounds Diagnose's request to the API server.
const probeTimeout = 5 * time.Second

// Diagnose explains the caches that are not filled and for which no list or watch error says why: client-go
// retries a refused connection (and other dial errors) without reporting it, which would leave only "no answer".
// It asks the API server for its version and keeps, as their reason, the server's URL with the error or, if it
// answers, that the list has not completed. Ready and the periodic "not filled" log line report that reason.
func (c *Cluster) Diagnose(ctx context.Context) {
	c.mu.Lock()
	ws := slices.Clone(c.watched)
	c.mu.Unlock()
	var unexplained []*watched
	for _, w := range ws {
		if !w.inf.HasSynced() && w.lastErr.Load() == nil {
			unexplained = append(unexplained, w)
		}
	}
	if len(unexplained) == 0 {
		return
	}
	msg := c.probe(ctx)
	for _, w := range unexplained {
		w.lastErr.CompareAndSwap(nil, &msg)
	}
}

// probe returns why the API server may not have answered a list: its URL and the error of GET /version, or that
// it answers.
func (c *Cluster) probe(ctx context.Context) string {
	rc := c.client.Discovery().RESTClient()
	if rc == nil { // a fake clientset
		return "no answer from the Kubernetes API server yet"
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req := rc.Get().AbsPath("/version")
	server := "the Kubernetes API server"
	if u := req.URL(); u != nil {
		server += " at " + (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
	}
	err := req.Do(ctx).Error()
	var uerr *url.Error
	switch {
	case err == nil:
		return server + " answers, but has not completed the list yet"
	case errors.As(err, &uerr):
		return "cannot reach " + server + ": " + uerr.Err.Error()
	}
	return server + " answered: " + err.Error()
}

func (w *watched) reason() string {
	if e := w.lastErr.Load(); e != nil {
		return *e
	}
	return "no answer from the Kubernetes API server yet"
}

// Ready returns nil when every informer in use has filled its cache, or an error naming the first that has not
// and why. A Cluster with no informer in use is ready.
func (c *Cluster) Ready() error {
	c.mu.Lock()
	ws := slices.Clone(c.watched)
	c.mu.Unlock()
	for _, w := range ws {
		if !w.inf.HasSynced() {
			return fmt.Errorf("discovery: kubernetes %s cache not filled yet: %s", w.resource, w.reason())
		}
	}
	return nil
}

// synced returns a channel closed once inf's cache is filled.
func synced(inf cache.SharedIndexInformer) <-chan struct{} { return inf.HasSyncedChecker().Done() }
