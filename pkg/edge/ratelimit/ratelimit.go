// Package ratelimit enforces the rate_limit of kedge's routes: a token bucket per route and caller, kept in a
// bounded least-recently-used table so that memory stays flat whatever the number of callers. Admission asks it
// once per request, after authentication (so the caller is known) and before any backend is touched.
//
// A caller is its identity: the OIDC subject, the verified client certificate's name, or "the static token"; an
// anonymous caller is its client address (an IPv4 address, or an IPv6 /64, which one host usually owns whole).
// Buckets are keyed by the route's backend label and limit too, so a reload that keeps a route's limit keeps its
// buckets, and one that changes the limit starts fresh ones.
package ratelimit

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/collector"
)

// DefaultMaxKeys is the table size when Config.MaxKeys is zero: about 25 MB at most.
const DefaultMaxKeys = 100_000

// shards splits the table so that concurrent requests rarely wait on one lock.
const shards = 16

// Config says how large the table is.
type Config struct {
	// MaxKeys bounds the buckets kept (route and caller pairs); the least recently used one is dropped beyond it,
	// which resets that caller's limit. 0 means DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter holds the buckets. It is safe for concurrent use.
type Limiter struct {
	now        func() time.Time
	seed       maphash.Seed
	shards     [shards]shard
	rejections *prometheus.CounterVec
}

// shard is one lock's part of the table: a map for lookups and a doubly linked list in use order (head: most
// recently used) for eviction. mu guards every field and the entries' links.
type shard struct {
	mu         sync.Mutex
	max        int
	m          map[string]*entry
	head, tail *entry
}

type entry struct {
	key        string
	bucket     *rate.Limiter // has its own lock; used outside the shard's
	prev, next *entry
}

// New returns a Limiter whose kedge_ratelimit_rejections_total{route} and kedge_ratelimit_keys are registered on reg
// (nil: unregistered).
func New(cfg Config, reg prometheus.Registerer) (*Limiter, error) {
	if cfg.MaxKeys < 0 {
		return nil, fmt.Errorf("ratelimit: MaxKeys %d is negative", cfg.MaxKeys)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{now: cfg.Now, seed: maphash.MakeSeed()}
	per := max(1, (cfg.MaxKeys+shards-1)/shards)
	for i := range l.shards {
		l.shards[i].max = per
		l.shards[i].m = make(map[string]*entry)
	}
	var err error
	l.rejections, err = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_ratelimit_rejections_total",
		Help: "Requests, calls and tunnels refused because their caller was over the route's rate_limit, by route " +
			"(backend name).",
	}, []string{"route"}))
	if err != nil {
		return nil, fmt.Errorf("ratelimit: registering metrics: %w", err)
	}
	if reg != nil {
		keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kedge_ratelimit_keys",
			Help: "Rate-limit buckets held (route and caller pairs); at most --server_ratelimit_max_keys.",
		}, func() float64 { return float64(l.Len()) })
		if _, err := collector.Register(reg, keys); err != nil {
			return nil, fmt.Errorf("ratelimit: registering metrics: %w", err)
		}
	}
	return l, nil
}

// Request is one request to count against a route's limit.
type Request struct {
	// Route is the route's backend label (the metric label).
	Route string
	// Limit is the route's limit.
	Limit route.RateLimit
	// Identity is the authenticated caller; an anonymous one is told apart by RemoteAddr. It is a copy, not a
	// pointer, so that the caller's admission result never has to leave its stack for it.
	Identity authn.Identity
	// RemoteAddr is the client's "ip:port" (or bare IP).
	RemoteAddr string
}

// Allow takes a token from the request's bucket. When there is none it returns false and how long until there will
// be one, and counts the rejection. It does not allocate once the bucket exists.
func (l *Limiter) Allow(req *Request) (bool, time.Duration) {
	var buf [160]byte
	key := appendKey(buf[:0], req)
	sh := &l.shards[maphash.Bytes(l.seed, key)%shards]
	now := l.now()
	b := sh.bucket(key, req.Limit)
	if b.AllowN(now, 1) {
		return true, 0
	}
	l.rejections.WithLabelValues(req.Route).Inc()
	// The bucket holds less than one token; it refills at RequestsPerSecond.
	missing := 1 - b.TokensAt(now)
	wait := time.Duration(math.Ceil(missing / req.Limit.RequestsPerSecond * float64(time.Second)))
	return false, max(wait, time.Millisecond)
}

// Len is the number of buckets held.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// bucket returns the bucket of key, creating it (and evicting the least recently used one when full).
func (sh *shard) bucket(key []byte, limit route.RateLimit) *rate.Limiter {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[string(key)]; ok {
		sh.toFront(e)
		return e.bucket
	}
	if len(sh.m) >= sh.max && sh.tail != nil {
		old := sh.tail
		sh.unlink(old)
		delete(sh.m, old.key)
	}
	e := &entry{key: string(key), bucket: rate.NewLimiter(rate.Limit(limit.RequestsPerSecond), max(limit.Burst, 1))}
	sh.m[e.key] = e
	sh.pushFront(e)
	return e.bucket
}

func (sh *shard) toFront(e *entry) {
	if sh.head == e {
		return
	}
	sh.unlink(e)
	sh.pushFront(e)
}

func (sh *shard) pushFront(e *entry) {
	e.prev, e.next = nil, sh.head
	if sh.head != nil {
		sh.head.prev = e
	}
	sh.head = e
	if sh.tail == nil {
		sh.tail = e
	}
}

func (sh *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// appendKey appends the bucket key of req: route label, limit and caller, each length-prefixed so that no choice of
// values (an OIDC subject may contain anything) makes two callers' keys equal.
func appendKey(b []byte, req *Request) []byte {
	field := func(b []byte, s string) []byte {
		b = binary.AppendUvarint(b, uint64(len(s)))
		return append(b, s...)
	}
	b = field(b, req.Route)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(req.Limit.RequestsPerSecond))
	b = binary.AppendUvarint(b, uint64(req.Limit.Burst))
	id := &req.Identity
	switch {
	case id.Method == authn.MethodOIDC:
		b = append(b, 'o')
		b = field(b, id.Subject)
	case len(id.CertNames) > 0:
		b = append(b, 'c')
		b = field(b, id.CertNames[0])
	case id.Method == authn.MethodStaticToken:
		b = append(b, 's') // one token, one caller
	default:
		b = append(b, 'a')
		b = appendClient(b, req.RemoteAddr)
	}
	return b
}

// appendClient appends an anonymous caller's address: IPv4, or the /64 of an IPv6 address. An address that does not
// parse is used as given.
func appendClient(b []byte, remote string) []byte {
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(remote); err == nil { // what net/http and grpc-go report
		addr = ap.Addr()
	} else if a, err := netip.ParseAddr(remote); err == nil {
		addr = a
	} else {
		b = append(b, '?')
		return strconv.AppendQuote(b, remote)
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		addr = p.Addr()
	}
	return addr.AppendTo(b)
}
