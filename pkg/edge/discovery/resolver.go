package discovery

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// byService indexes EndpointSlices by "namespace/service".
const byService = "kedge-service"

var _ backend.SourceFactory = (*Cluster)(nil)

// Source implements backend.SourceFactory for k8s resolvers: the source follows the EndpointSlices of the Service
// that spec.Resolver.K8sTarget names. The first call registers the EndpointSlice informer, which Run starts.
func (c *Cluster) Source(spec backend.Spec) (backend.EndpointSource, error) {
	t, err := config.ParseK8sTarget(spec.Resolver.K8sTarget)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if c.opts.Namespace != "" && t.Namespace != c.opts.Namespace {
		return nil, fmt.Errorf("discovery: service %s/%s is outside namespace %q, the only one kedge watches (--discovery_namespace)",
			t.Namespace, t.Service, c.opts.Namespace)
	}
	idx, err := c.endpointSlices()
	if err != nil {
		return nil, err
	}
	return &source{
		idx:         idx,
		target:      t,
		backend:     spec.Name,
		log:         c.log.With(logging.FieldBackend, spec.Name, "k8s_target", t.String()),
		metrics:     c.metrics,
		syncTimeout: c.opts.CacheSyncTimeout,
	}, nil
}

// sliceIndex is the EndpointSlice informer with an index by Service, and the sources waiting for changes.
type sliceIndex struct {
	inf cache.SharedIndexInformer

	mu   sync.Mutex                        // guards subs
	subs map[string]map[chan struct{}]bool // "namespace/service" -> notification channels (capacity 1)
}

// endpointSlices returns the EndpointSlice index, registering its informer on first use.
func (c *Cluster) endpointSlices() (*sliceIndex, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slices != nil {
		return c.slices, nil
	}
	inf := c.factory.Discovery().V1().EndpointSlices().Informer()
	idx := &sliceIndex{inf: inf, subs: map[string]map[chan struct{}]bool{}}
	if err := inf.AddIndexers(cache.Indexers{byService: sliceServiceKeys}); err != nil {
		return nil, fmt.Errorf("discovery: indexing EndpointSlices: %w", err)
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    idx.changed,
		UpdateFunc: func(old, cur any) { idx.changed(cur); idx.changedIfMoved(old, cur) },
		DeleteFunc: idx.changed,
	})
	if err != nil {
		return nil, fmt.Errorf("discovery: watching EndpointSlices: %w", err)
	}
	c.register("endpointslices", inf)
	c.slices = idx
	return idx, nil
}

// sliceServiceKeys is the index function of byService.
func sliceServiceKeys(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	svc := s.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + svc}, nil
}

// changed notifies the sources of the Service that obj (an EndpointSlice, or a deleted one's tombstone) belongs to.
func (x *sliceIndex) changed(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	keys, _ := sliceServiceKeys(obj)
	if len(keys) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for ch := range x.subs[keys[0]] {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending; the source reads the whole state anyway
		}
	}
}

// changedIfMoved notifies the sources of old's Service too if the slice moved to another Service (it never does
// in practice: the label is set by the EndpointSlice controller).
func (x *sliceIndex) changedIfMoved(old, cur any) {
	o, _ := sliceServiceKeys(old)
	c, _ := sliceServiceKeys(cur)
	if len(o) > 0 && (len(c) == 0 || o[0] != c[0]) {
		x.changed(old)
	}
}

// subscribe returns a channel that receives a value after changes to the slices of key, and a func that ends the
// subscription.
func (x *sliceIndex) subscribe(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	x.mu.Lock()
	if x.subs[key] == nil {
		x.subs[key] = map[chan struct{}]bool{}
	}
	x.subs[key][ch] = true
	x.mu.Unlock()
	return ch, func() {
		x.mu.Lock()
		delete(x.subs[key], ch)
		if len(x.subs[key]) == 0 {
			delete(x.subs, key)
		}
		x.mu.Unlock()
	}
}

// slicesOf returns the cached EndpointSlices of key.
func (x *sliceIndex) slicesOf(key string) ([]*discoveryv1.EndpointSlice, error) {
	objs, err := x.inf.GetIndexer().ByIndex(byService, key)
	if err != nil {
		return nil, fmt.Errorf("discovery: reading the EndpointSlice cache: %w", err)
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// source is the EndpointSource of one k8s backend.
type source struct {
	idx         *sliceIndex
	target      config.K8sTarget
	backend     string
	log         logging.Logger
	metrics     *metrics
	syncTimeout time.Duration
}

var _ backend.EndpointSource = (*source)(nil)

// Run implements backend.EndpointSource: it publishes the Service's endpoints once the EndpointSlice cache is
// filled (an empty set if that takes longer than the cache sync timeout, so waiting requests give up), then after
// every change to the Service's slices. A target that the slices cannot satisfy (an unknown or ambiguous port) is
// logged and counted, and the last good set stays.
func (s *source) Run(ctx context.Context, publish func([]string)) {
	key := s.target.Namespace + "/" + s.target.Service
	notify, unsubscribe := s.idx.subscribe(key) // before the first read, so no change is missed
	defer unsubscribe()
	s.metrics.acquire(s.backend)
	defer s.metrics.release(s.backend)

	published := false
	timer := time.NewTimer(s.syncTimeout)
	select {
	case <-synced(s.idx.inf):
	case <-ctx.Done():
		timer.Stop()
		return
	case <-timer.C:
		publish(nil)
		published = true
		select {
		case <-synced(s.idx.inf):
		case <-ctx.Done():
			return
		}
	}
	timer.Stop()

	failing := false
	for {
		all, err := s.idx.slicesOf(key)
		var eps []string
		if err == nil {
			eps, err = endpointsOf(all, s.target)
		}
		if err != nil {
			s.metrics.resolverErrors.WithLabelValues(s.backend).Inc()
			if !failing {
				s.log.Warn("k8s resolver: keeping the last endpoints", logging.FieldError, err)
			}
			failing = true
			if !published {
				publish(nil)
				published = true
			}
		} else {
			eps = slices.Compact(slices.Sorted(slices.Values(eps)))
			if failing {
				s.log.Info("k8s resolver resolves again", "endpoints", len(eps))
			}
			failing = false
			s.log.Debug("k8s resolver: endpoints", "endpoints", eps)
			publish(eps)
			published = true
			s.metrics.endpoints.WithLabelValues(s.backend).Set(float64(len(eps)))
		}
		select {
		case <-ctx.Done():
			return
		case <-notify:
		}
	}
}
