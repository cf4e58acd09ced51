package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// subscriber receives every new endpoint set of an endpointSet (the gRPC resolvers). version grows with each set,
// so a subscriber can drop a set older than one it already has.
type subscriber interface {
	push(version uint64, endpoints []string)
}

// endpointSet holds one backend's current endpoints (sorted "host:port" strings), picks one per request by round
// robin, and remembers which endpoints are ejected. Its source publishes into it; requests read it lock-free.
type endpointSet struct {
	cur   atomic.Pointer[[]string] // nil until the first publish; the slice is never modified
	ready chan struct{}            // closed by the first publish
	next  atomic.Uint64            // round-robin counter
	now   func() time.Time

	// onChange is called (outside mu) with each new set, in publish order; it feeds the endpoints gauge.
	onChange func(endpoints []string)

	nEjected atomic.Int32 // len(ejected), so pick skips the lock when nothing is ejected
	mu       sync.Mutex   // guards the fields below
	version  uint64
	subs     map[subscriber]struct{}
	ejected  map[string]time.Time // endpoint -> ejected until
}

func newEndpointSet(onChange func([]string)) *endpointSet {
	return &endpointSet{
		ready:    make(chan struct{}),
		now:      time.Now,
		onChange: onChange,
		subs:     make(map[subscriber]struct{}),
		ejected:  make(map[string]time.Time),
	}
}

// publish makes endpoints the current set (sorted, duplicates removed). It is called by one goroutine at a time.
func (s *endpointSet) publish(endpoints []string) {
	eps := slices.Compact(slices.Sorted(slices.Values(endpoints)))
	s.mu.Lock()
	if old := s.cur.Load(); old != nil && slices.Equal(*old, eps) {
		s.mu.Unlock()
		return
	}
	first := s.cur.Load() == nil
	s.version++
	version := s.version
	s.cur.Store(&eps)
	for ep := range s.ejected {
		if _, found := slices.BinarySearch(eps, ep); !found {
			delete(s.ejected, ep)
		}
	}
	s.nEjected.Store(int32(len(s.ejected)))
	subs := make([]subscriber, 0, len(s.subs))
	for sub := range s.subs {
		subs = append(subs, sub)
	}
	s.mu.Unlock()

	if first {
		close(s.ready)
	}
	if s.onChange != nil {
		s.onChange(eps)
	}
	for _, sub := range subs {
		sub.push(version, eps)
	}
}

// subscribe adds sub and pushes the current set to it, if there is one. The returned func removes sub.
func (s *endpointSet) subscribe(sub subscriber) (unsubscribe func()) {
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	version, cur := s.version, s.cur.Load()
	s.mu.Unlock()
	if cur != nil {
		sub.push(version, *cur)
	}
	return func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}
}

// current returns the current set and whether the source has published at all.
func (s *endpointSet) current() ([]string, bool) {
	if p := s.cur.Load(); p != nil {
		return *p, true
	}
	return nil, false
}

// await returns the current set, waiting up to limit (or until ctx is done) for the first publish.
func (s *endpointSet) await(ctx context.Context, limit time.Duration) ([]string, error) {
	if eps, ok := s.current(); ok {
		return eps, nil
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-s.ready:
		eps, _ := s.current()
		return eps, nil
	case <-t.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pick returns the first endpoint of eps, in round-robin order, that is neither in tried nor ejected. Each pick takes
// exactly one value of the shared counter and scans from there, so concurrent picks cannot push one another past the
// only endpoint that is not ejected: an endpoint is found whenever eps has one to offer.
func (s *endpointSet) pick(eps, tried []string) (string, bool) {
	n := uint64(len(eps))
	if n == 0 {
		return "", false
	}
	start := s.next.Add(1) - 1
	for i := range n {
		ep := eps[(start+i)%n]
		if slices.Contains(tried, ep) || s.isEjected(ep) {
			continue
		}
		return ep, true
	}
	return "", false
}

// attempts hands out the endpoints one request (or tunnel) tries, each at most once: first from the set that was
// current when the request began; when that set has nothing left to try and discovery has published another set
// meanwhile (the backend's pods were replaced while the request was being retried), once more from the new set.
// Every attempt is a fresh pick, so it honours ejections made by other requests in the meantime.
type attempts struct {
	set     *endpointSet
	eps     []string // the set being tried
	tried   []string
	renewed bool
}

func (s *endpointSet) attempts(eps []string) *attempts {
	return &attempts{set: s, eps: eps}
}

// next returns the endpoint to try next, or false when none is left.
func (a *attempts) next() (string, bool) {
	ep, ok := a.set.pick(a.eps, a.tried)
	if !ok && !a.renewed {
		a.renewed = true
		if cur, _ := a.set.current(); len(cur) > 0 && !slices.Equal(cur, a.eps) {
			a.eps = cur
			ep, ok = a.set.pick(a.eps, a.tried)
		}
	}
	if ok {
		a.tried = append(a.tried, ep)
	}
	return ep, ok
}

func (s *endpointSet) isEjected(ep string) bool {
	if s.nEjected.Load() == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.ejected[ep]
	if !ok {
		return false
	}
	if s.now().Before(until) {
		return true
	}
	delete(s.ejected, ep)
	s.nEjected.Store(int32(len(s.ejected)))
	return false
}

// eject skips ep for d. An endpoint that is no longer in the current set (a request dialled it from an older set) is
// not recorded: publish has already dropped its ejection, and a stale entry would be reported as ejected.
func (s *endpointSet) eject(ep string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return
	}
	if _, found := slices.BinarySearch(*cur, ep); !found {
		return
	}
	s.ejected[ep] = s.now().Add(d)
	s.nEjected.Store(int32(len(s.ejected)))
}

// ejectedNow returns the endpoints ejected at this moment, sorted.
func (s *endpointSet) ejectedNow() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []string
	for ep, until := range s.ejected {
		if now.Before(until) {
			out = append(out, ep)
		}
	}
	slices.Sort(out)
	return out
}

// EndpointSource finds the endpoints of one backend. The pool runs each source in a goroutine of its own.
type EndpointSource interface {
	// Run publishes the complete current set of endpoints ("host:port") each time it may have changed, until ctx
	// is done. The first publish should follow the first attempt, even a failed one (with an empty set), so that
	// requests waiting for the backend's first resolution stop waiting. After a failure, a source keeps its last
	// good set (it does not publish). Run must not call publish after it returned.
	Run(ctx context.Context, publish func(endpoints []string))
}

// dnsSource resolves host and srv resolvers by polling DNS.
type dnsSource struct {
	dns      DNSResolver
	res      Resolver
	interval time.Duration
	log      logging.Logger
	// onError counts a failed (or partly failed) resolution.
	onError func()
}

var _ EndpointSource = (*dnsSource)(nil)

// Run implements EndpointSource. After a failure it retries after 1s, 2s, 4s... up to the interval.
func (s *dnsSource) Run(ctx context.Context, publish func([]string)) {
	published := false
	failing := false // log the first failure of a streak as a warning, the rest at debug
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		eps, err := s.resolve(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := s.interval
		switch {
		case err != nil && !failing:
			s.log.Warn("resolving backend endpoints; keeping the last good ones", logging.FieldError, err, "resolved", len(eps))
		case err != nil:
			s.log.Debug("resolving backend endpoints", logging.FieldError, err, "resolved", len(eps))
		case failing:
			s.log.Info("backend endpoints resolve again", "resolved", len(eps))
		}
		if err != nil {
			s.onError()
		}
		failing = err != nil
		if len(eps) > 0 {
			failures = 0
			publish(eps)
			published = true
		} else {
			failures++
			wait = min(s.interval, time.Second<<min(failures-1, 6))
			if !published {
				publish(nil)
				published = true
			}
		}
		timer.Reset(wait)
	}
}

// resolve returns the endpoints, and an error if any lookup failed. Both may be set (srv: some targets resolved).
func (s *dnsSource) resolve(ctx context.Context) ([]string, error) {
	switch s.res.Kind {
	case ResolverHost:
		return s.lookupHost(ctx, s.res.DNSName, s.res.Port)
	case ResolverSRV:
		return s.resolveSRV(ctx)
	default:
		return nil, fmt.Errorf("backend: resolver kind %v is not a DNS resolver", s.res.Kind)
	}
}

func (s *dnsSource) resolveSRV(ctx context.Context) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	_, records, err := s.dns.LookupSRV(lctx, "", "", s.res.DNSName)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("backend: SRV lookup of %q: %w", s.res.DNSName, err)
	}
	var eps []string
	var errs []error
	for _, r := range records {
		target := strings.TrimSuffix(r.Target, ".")
		if target == "" {
			continue // "." means the service is not available at this domain
		}
		port := uint32(r.Port)
		if s.res.PortOverride != 0 {
			port = s.res.PortOverride
		}
		if port == 0 {
			// Nothing listens on TCP port 0: dialing it would only fail later, on a request.
			errs = append(errs, fmt.Errorf("backend: SRV lookup of %q: target %q has port 0", s.res.DNSName, target))
			continue
		}
		got, err := s.lookupHost(ctx, target, port)
		eps = append(eps, got...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(eps) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("backend: SRV lookup of %q: no usable records", s.res.DNSName))
	}
	return eps, errors.Join(errs...)
}

// lookupHost returns host's addresses paired with port; IP literals pass through without a lookup. An IPv6 literal
// with a zone is refused: a zone names an interface of this host, which an SRV answer has no say in (and config
// validation already refuses one in a host resolver); its zone may also hold any byte, ']' included, which would
// make an endpoint that does not split back into host and port.
func (s *dnsSource) lookupHost(ctx context.Context, host string, port uint32) ([]string, error) {
	p := strconv.FormatUint(uint64(port), 10)
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return nil, fmt.Errorf("backend: %q is an IP address with a zone", host)
		}
		return []string{net.JoinHostPort(ip.String(), p)}, nil
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := s.dns.LookupHost(lctx, host)
	if err != nil {
		return nil, fmt.Errorf("backend: lookup of %q: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("backend: lookup of %q: no addresses", host)
	}
	eps := make([]string, 0, len(addrs))
	for _, a := range addrs {
		eps = append(eps, net.JoinHostPort(a, p))
	}
	return eps, nil
}

// serverNameOf returns the name to verify a backend's certificates against when TLS.ServerName is empty: the
// DNS name of a host resolver, or the service domain of an srv resolver ("_https._tcp.example.com" ->
// "example.com"), without a trailing dot. It is empty for k8s resolvers.
func serverNameOf(r Resolver) string {
	name := strings.TrimSuffix(r.DNSName, ".")
	switch r.Kind {
	case ResolverHost:
		return name
	case ResolverSRV:
		for strings.HasPrefix(name, "_") {
			i := strings.IndexByte(name, '.')
			if i < 0 {
				return ""
			}
			name = name[i+1:]
		}
		return name
	default:
		return ""
	}
}
