package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// clock is a settable clock for the buckets.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newLimiter(t *testing.T, maxKeys int) (*Limiter, *clock, *prometheus.Registry) {
	t.Helper()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	reg := prometheus.NewRegistry()
	l, err := New(Config{MaxKeys: maxKeys, Now: c.now}, reg)
	if err != nil {
		t.Fatal(err)
	}
	return l, c, reg
}

func TestBucketPerCaller(t *testing.T) {
	t.Parallel()
	l, c, _ := newLimiter(t, 0)
	limit := route.RateLimit{RequestsPerSecond: 2, Burst: 3}
	alice := &authn.Identity{Method: authn.MethodOIDC, Subject: "alice"}
	bob := &authn.Identity{Method: authn.MethodOIDC, Subject: "bob"}
	req := func(id *authn.Identity, addr string) *Request {
		return &Request{Route: "web", Limit: limit, Identity: *id, RemoteAddr: addr}
	}
	for i := range 3 {
		if ok, _ := l.Allow(req(alice, "10.0.0.1:1")); !ok {
			t.Fatalf("alice request %d refused within the burst", i)
		}
	}
	ok, wait := l.Allow(req(alice, "10.0.0.2:2")) // another address, same caller
	if ok {
		t.Fatal("alice's fourth request allowed beyond the burst")
	}
	if wait != 500*time.Millisecond {
		t.Errorf("retry after %v, want 500ms (one token at 2/s)", wait)
	}
	if ok, _ := l.Allow(req(bob, "10.0.0.1:1")); !ok {
		t.Error("bob refused: callers must not share a bucket")
	}
	c.add(500 * time.Millisecond)
	if ok, _ := l.Allow(req(alice, "10.0.0.1:1")); !ok {
		t.Error("alice refused after the bucket refilled one token")
	}
	if ok, _ := l.Allow(req(alice, "10.0.0.1:1")); ok {
		t.Error("alice allowed twice on one refilled token")
	}
	// Another route, or the same route with another limit, has its own buckets.
	if ok, _ := l.Allow(&Request{Route: "api", Limit: limit, Identity: *alice}); !ok {
		t.Error("alice refused on another route")
	}
	if ok, _ := l.Allow(req(alice, "")); ok {
		t.Error("same route and limit must share the bucket")
	}
	if ok, _ := l.Allow(&Request{Route: "web", Limit: route.RateLimit{RequestsPerSecond: 5, Burst: 3}, Identity: *alice}); !ok {
		t.Error("a changed limit must start a fresh bucket")
	}
}

func TestCallerKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b Request
		same bool
	}{
		{"anonymous by address", Request{RemoteAddr: "192.0.2.1:1000"}, Request{RemoteAddr: "192.0.2.1:2000"}, true},
		{"anonymous different addresses", Request{RemoteAddr: "192.0.2.1:1000"}, Request{RemoteAddr: "192.0.2.3:1000"}, false},
		{"IPv6 same /64", Request{RemoteAddr: "[2001:db8::1]:1"}, Request{RemoteAddr: "[2001:db8::ffff:2]:2"}, true},
		{"IPv6 other /64", Request{RemoteAddr: "[2001:db8::1]:1"}, Request{RemoteAddr: "[2001:db8:0:1::1]:1"}, false},
		{"v4-mapped is v4", Request{RemoteAddr: "[::ffff:192.0.2.1]:1"}, Request{RemoteAddr: "192.0.2.1:9"}, true},
		{"static token is one caller", Request{Identity: authn.Identity{Method: authn.MethodStaticToken}, RemoteAddr: "192.0.2.1:1"},
			Request{Identity: authn.Identity{Method: authn.MethodStaticToken}, RemoteAddr: "192.0.2.9:1"}, true},
		{"certificate by name", Request{Identity: authn.Identity{Method: authn.MethodClientCert, CertNames: []string{"robot"}}},
			Request{Identity: authn.Identity{Method: authn.MethodClientCert, CertNames: []string{"other"}}}, false},
		{"subject cannot pose as a certificate", Request{Identity: authn.Identity{Method: authn.MethodOIDC, Subject: "robot"}},
			Request{Identity: authn.Identity{Method: authn.MethodClientCert, CertNames: []string{"robot"}}}, false},
		{"length prefix", Request{Route: "a", Identity: authn.Identity{Method: authn.MethodOIDC, Subject: "\x01b"}},
			Request{Route: "a\x01", Identity: authn.Identity{Method: authn.MethodOIDC, Subject: "b"}}, false},
		{"anonymous caller is its address, not an empty identity", Request{Identity: authn.Identity{}, RemoteAddr: "192.0.2.1:1"},
			Request{Identity: authn.Identity{}, RemoteAddr: "192.0.2.2:1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ka, kb := string(appendKey(nil, &tt.a)), string(appendKey(nil, &tt.b))
			if (ka == kb) != tt.same {
				t.Errorf("keys %q and %q: same = %v, want %v", ka, kb, ka == kb, tt.same)
			}
		})
	}
}

func TestTableIsBounded(t *testing.T) {
	t.Parallel()
	l, _, reg := newLimiter(t, 64)
	limit := route.RateLimit{RequestsPerSecond: 1, Burst: 1}
	for i := range 10_000 {
		l.Allow(&Request{Route: "web", Limit: limit, RemoteAddr: fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)})
	}
	if n := l.Len(); n > 64 {
		t.Errorf("%d buckets held, want at most 64", n)
	}
	if got := testutil.ToFloat64(l.rejections.WithLabelValues("web")); got != 0 {
		t.Errorf("rejections = %v, want 0 (every caller made one request)", got)
	}
	// The most recently used callers keep their buckets: the last one is still empty.
	if ok, _ := l.Allow(&Request{Route: "web", Limit: limit, RemoteAddr: "10.0.39.15:1"}); ok {
		t.Error("the most recent caller's bucket was evicted")
	}
	if n, err := testutil.GatherAndCount(reg, "kedge_ratelimit_rejections_total", "kedge_ratelimit_keys"); err != nil || n != 2 {
		t.Errorf("metrics: %d series, %v", n, err)
	}
}

func TestRejectionsCounted(t *testing.T) {
	t.Parallel()
	l, _, _ := newLimiter(t, 0)
	r := &Request{Route: "web", Limit: route.RateLimit{RequestsPerSecond: 0.5, Burst: 1}, RemoteAddr: "192.0.2.1:5"}
	l.Allow(r)
	ok, wait := l.Allow(r)
	if ok || wait != 2*time.Second {
		t.Errorf("second request: ok=%v wait=%v, want refused, 2s", ok, wait)
	}
	if got := testutil.ToFloat64(l.rejections.WithLabelValues("web")); got != 1 {
		t.Errorf("rejections = %v, want 1", got)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l, _, _ := newLimiter(t, 0)
	id := &authn.Identity{Method: authn.MethodOIDC, Subject: "alice@example.com"}
	r := &Request{Route: "web", Limit: route.RateLimit{RequestsPerSecond: 1e6, Burst: 1_000_000}, Identity: *id}
	l.Allow(r)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(r) }); n != 0 {
		t.Errorf("Allow allocates %v times per call for a known caller, want 0", n)
	}
	anon := &Request{Route: "web", Limit: r.Limit, RemoteAddr: "[2001:db8::1]:443"}
	l.Allow(anon)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(anon) }); n != 0 {
		t.Errorf("Allow allocates %v times per call for a known address, want 0", n)
	}
}

func TestNegativeMaxKeys(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{MaxKeys: -1}, nil); err == nil {
		t.Error("MaxKeys -1 accepted")
	}
}

func BenchmarkAllow(b *testing.B) {
	l, err := New(Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	id := &authn.Identity{Method: authn.MethodOIDC, Subject: "alice@example.com"}
	r := &Request{Route: "web", Limit: route.RateLimit{RequestsPerSecond: 1e6, Burst: 1_000_000}, Identity: *id}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow(r)
		}
	})
}
