package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// Timing of Discoverer.Run.
const (
	// DefaultCoalesce is how long discovery waits after a change for more before it applies them together.
	DefaultCoalesce = 200 * time.Millisecond
	// maxRetryBackoff caps the wait before retrying a failed apply.
	maxRetryBackoff = 30 * time.Second
)

// Applier makes the routes and backends of the usable Services live, together with the file config (see
// config.Merge), and returns the Services it had to leave out. An error means nothing changed.
type Applier func(gens []config.Generated) ([]config.Rejected, error)

// Discoverer turns Services labelled <prefix>kedge-exposed: "true" into routes and backends.
type Discoverer struct {
	cluster  *Cluster
	opts     Options
	coalesce time.Duration
	log      logging.Logger
	metrics  *discoveryMetrics
	events   *eventReporter
	applied  atomic.Bool
}

// NewDiscoverer returns a Discoverer that watches the Services of c. Its metrics are registered on reg (nil: not
// exported).
func NewDiscoverer(c *Cluster, opts Options, log logging.Logger, reg prometheus.Registerer) *Discoverer {
	if log == nil {
		log = logging.Discard()
	}
	return &Discoverer{
		cluster:  c,
		opts:     opts,
		coalesce: DefaultCoalesce,
		log:      log,
		metrics:  newDiscoveryMetrics(reg, log),
		events:   &eventReporter{client: c.client, log: log},
	}
}

// Ready returns nil once the first discovered configuration was applied and every cache in use is filled: the
// Services', and the EndpointSlices' that the k8s resolvers of the applied backends registered.
func (d *Discoverer) Ready() error {
	if err := d.cluster.Ready(); err != nil {
		return err
	}
	if !d.applied.Load() {
		return errors.New("discovery: the discovered routes are not applied yet")
	}
	return nil
}

// Run watches the Services (the Cluster must be running too) and, once the cache is filled and then after every
// burst of changes (coalesced for ~200ms), hands the routes and backends of every usable Service to apply. Each
// call describes the whole current state, so no change is lost. Services that cannot be used, here or in apply,
// are logged, counted and reported as a Kubernetes Event on the Service (if RBAC allows), once per new problem;
// the others are applied regardless. A failed apply is retried with backoff. Run returns nil when ctx is done.
func (d *Discoverer) Run(ctx context.Context, apply Applier) error {
	inf, err := d.cluster.serviceInformer(d.opts.LabelPrefix + config.ExposedLabel)
	if err != nil {
		return err
	}
	notify := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case notify <- struct{}{}:
		default:
		}
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, cur any) { poke(cur) }, DeleteFunc: poke,
	})
	if err != nil {
		return fmt.Errorf("discovery: watching Services: %w", err)
	}
	defer func() { _ = inf.RemoveEventHandler(reg) }()

	select {
	case <-synced(inf):
	case <-ctx.Done():
		return nil
	}
	problems := map[string]string{} // Source -> the problem last reported
	timer := time.NewTimer(0)       // the first sync right away
	defer timer.Stop()
	armed := true
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-notify:
			if !armed {
				timer.Reset(d.coalesce)
				armed = true
			}
		case <-timer.C:
			armed = false
			if err := d.sync(ctx, inf, apply, problems); err != nil {
				d.log.Error("applying the discovered config failed; retrying", logging.FieldError, err, "retry_in", backoff)
				timer.Reset(backoff)
				armed = true
				backoff = min(2*backoff, maxRetryBackoff)
				continue
			}
			backoff = time.Second
		}
	}
}

// sync generates the config of every exposed Service in the cache and applies it.
func (d *Discoverer) sync(ctx context.Context, inf cache.SharedIndexInformer, apply Applier, problems map[string]string) error {
	var svcs []*corev1.Service
	for _, o := range inf.GetStore().List() {
		if svc, ok := o.(*corev1.Service); ok && exposed(svc, d.opts.LabelPrefix) {
			svcs = append(svcs, svc)
		}
	}
	gens, current, bySource := d.generateAll(svcs)
	rejected, err := apply(gens)
	if err != nil {
		d.metrics.applies.WithLabelValues("failure").Inc()
		return err
	}
	d.metrics.applies.WithLabelValues("success").Inc()
	for _, r := range rejected {
		current[r.Source] = strings.ReplaceAll(r.Err.Error(), "\n", "; ")
	}
	d.report(ctx, current, problems, bySource)
	d.metrics.services.WithLabelValues("exposed").Set(float64(len(svcs) - len(current)))
	d.metrics.services.WithLabelValues("rejected").Set(float64(len(current)))
	if !d.applied.Swap(true) {
		d.log.Info("discovered routes applied", "services", len(svcs)-len(current), "rejected", len(current))
	} else {
		d.log.Debug("discovered routes applied", "services", len(svcs)-len(current), "rejected", len(current))
	}
	return nil
}

// generateAll generates the config of svcs in the order they are tried: Services without wildcard hosts first,
// then the oldest first, so that a Service keeps its host when a newer one claims it too. It returns the problems
// of the Services it could not generate, by Source.
func (d *Discoverer) generateAll(svcs []*corev1.Service) ([]config.Generated, map[string]string, map[string]*corev1.Service) {
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var gens []config.Generated
	problems := map[string]string{}
	bySource := make(map[string]*corev1.Service, len(svcs))
	for _, svc := range svcs {
		g, err := generate(svc, d.opts)
		bySource[g.Source] = svc
		if err != nil {
			problems[g.Source] = err.Error()
			continue
		}
		gens = append(gens, g)
	}
	slices.SortStableFunc(gens, func(a, b config.Generated) int {
		switch wa, wb := wildcard(a), wildcard(b); {
		case wa == wb:
			return 0
		case wb:
			return -1
		default:
			return 1
		}
	})
	return gens, problems, bySource
}

// report logs, counts and raises an Event for each problem that is new or changed, logs those that went away, and
// remembers current as the reported state.
func (d *Discoverer) report(ctx context.Context, current, reported map[string]string, bySource map[string]*corev1.Service) {
	for _, src := range slices.Sorted(maps.Keys(current)) {
		msg := current[src]
		if reported[src] == msg {
			continue
		}
		d.metrics.rejections.Inc()
		d.log.Warn("service skipped by discovery", "service", strings.TrimPrefix(src, "service "), logging.FieldError, msg)
		if svc := bySource[src]; svc != nil && d.opts.Events {
			d.events.warn(ctx, svc, msg)
		}
	}
	for src := range reported {
		if _, still := current[src]; !still {
			d.log.Info("service no longer skipped by discovery", "service", strings.TrimPrefix(src, "service "))
			delete(reported, src)
		}
	}
	for src, msg := range current {
		reported[src] = msg
	}
}

// serviceInformer returns the informer of Services labelled key: "true", registering it on first use. The API
// server filters by the label, so a Service relabelled "false" leaves the cache as a deletion.
func (c *Cluster) serviceInformer(key string) (cache.SharedIndexInformer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.services != nil {
		return c.services, nil
	}
	req, err := labels.NewRequirement(key, "=", []string{"true"})
	if err != nil {
		return nil, fmt.Errorf("discovery: label %q: %w", key, err)
	}
	selector := labels.NewSelector().Add(*req).String()
	inf := c.factory.InformerFor(&corev1.Service{}, func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredServiceInformer(client, c.opts.Namespace, resync,
			cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			func(o *metav1.ListOptions) { o.LabelSelector = selector })
	})
	c.register("services", inf)
	c.services = inf
	return inf, nil
}
