package backend

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestDNSSourceResolve(t *testing.T) {
	t.Parallel()
	dns := sharedtest.NewResolver(nil)
	dns.SetHost("svc.test", "10.0.0.2", "10.0.0.1", "fd00::1")
	dns.SetHost("a.test", "10.1.0.1")
	dns.SetHost("b.test", "10.1.0.2", "10.1.0.3")
	dns.SetSRV("_http._tcp.svc.test",
		&net.SRV{Target: "a.test.", Port: 8080},
		&net.SRV{Target: "b.test.", Port: 9090},
		&net.SRV{Target: ".", Port: 1},
	)
	dns.SetSRV("_http._tcp.partial.test", &net.SRV{Target: "a.test.", Port: 80}, &net.SRV{Target: "missing.test.", Port: 80})
	dns.SetSRV("_http._tcp.ip.test", &net.SRV{Target: "10.9.9.9", Port: 80})
	dns.SetSRV("_http._tcp.zero.test", &net.SRV{Target: "a.test.", Port: 0})
	dns.SetSRV("_http._tcp.zone.test", &net.SRV{Target: "fe80::1%eth0", Port: 80}, &net.SRV{Target: "::%]", Port: 80},
		&net.SRV{Target: "10.9.9.9", Port: 80})
	tests := []struct {
		name    string
		res     Resolver
		want    []string
		wantErr string
	}{
		{"host", Resolver{Kind: ResolverHost, DNSName: "svc.test", Port: 80},
			[]string{"10.0.0.1:80", "10.0.0.2:80", "[fd00::1]:80"}, ""},
		{"host IP literal", Resolver{Kind: ResolverHost, DNSName: "::1", Port: 443}, []string{"[::1]:443"}, ""},
		{"srv ports", Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.svc.test"},
			[]string{"10.1.0.1:8080", "10.1.0.2:9090", "10.1.0.3:9090"}, ""},
		{"srv port override", Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.svc.test", PortOverride: 81},
			[]string{"10.1.0.1:81", "10.1.0.2:81", "10.1.0.3:81"}, ""},
		{"srv IP target", Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.ip.test"}, []string{"10.9.9.9:80"}, ""},
		{"srv one target fails", Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.partial.test"},
			[]string{"10.1.0.1:80"}, `lookup of "missing.test"`},
		{"srv port 0", Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.zero.test"}, nil, `target "a.test" has port 0`},
		{"srv IP targets with a zone", Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.zone.test"},
			[]string{"10.9.9.9:80"}, `"::%]" is an IP address with a zone`},
		{"srv port 0 overridden", Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.zero.test", PortOverride: 8080},
			[]string{"10.1.0.1:8080"}, ""},
		{"host fails", Resolver{Kind: ResolverHost, DNSName: "nope.test", Port: 80}, nil, `lookup of "nope.test"`},
		{"srv fails", Resolver{Kind: ResolverSRV, DNSName: "_x._tcp.nope.test"}, nil, `SRV lookup of "_x._tcp.nope.test"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &dnsSource{dns: dns, res: tt.res}
			got, err := s.resolve(t.Context())
			set := newEndpointSet(nil)
			set.publish(got)
			got, _ = set.current()
			if !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("endpoints %v, want %v", got, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestDNSSourceKeepsLastGoodEndpoints runs a source with a short interval (tests may go below the 1s minimum that
// Options enforces) through success, failure and recovery.
func TestDNSSourceKeepsLastGoodEndpoints(t *testing.T) {
	t.Parallel()
	dns := sharedtest.NewResolver(nil)
	dns.SetHost("svc.test", "10.0.0.1")
	var errorsSeen atomic.Int64
	src := &dnsSource{
		dns:      dns,
		res:      Resolver{Kind: ResolverHost, DNSName: "svc.test", Port: 80},
		interval: 10 * time.Millisecond,
		log:      logging.Discard(),
		onError:  func() { errorsSeen.Add(1) },
	}
	set := newEndpointSet(nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx, set.publish) }()
	defer func() { cancel(); <-done }()

	current := func() []string { eps, _ := set.current(); return eps }
	sharedtest.Eventually(t, "first resolution", func() bool { return slices.Equal(current(), []string{"10.0.0.1:80"}) })
	dns.Fail("svc.test", errors.New("SERVFAIL"))
	sharedtest.Eventually(t, "a counted failure", func() bool { return errorsSeen.Load() >= 2 })
	if got := current(); !slices.Equal(got, []string{"10.0.0.1:80"}) {
		t.Errorf("after DNS failures endpoints are %v, want the last good ones", got)
	}
	dns.SetHost("svc.test", "10.0.0.2")
	sharedtest.Eventually(t, "recovery", func() bool { return slices.Equal(current(), []string{"10.0.0.2:80"}) })
}

func TestDNSSourcePublishesFirstFailure(t *testing.T) {
	t.Parallel()
	src := &dnsSource{
		dns:      sharedtest.NewResolver(nil),
		res:      Resolver{Kind: ResolverHost, DNSName: "nope.test", Port: 80},
		interval: time.Hour,
		log:      logging.Discard(),
		onError:  func() {},
	}
	set := newEndpointSet(nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx, set.publish) }()
	defer func() { cancel(); <-done }()
	eps, err := set.await(t.Context(), 5*time.Second)
	if _, ok := set.current(); !ok || err != nil || len(eps) != 0 {
		t.Errorf("after a failed first lookup: endpoints %v, resolved %v, err %v; want an empty resolved set", eps, ok, err)
	}
}

func TestEndpointSetEjection(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	set := newEndpointSet(nil)
	set.now = func() time.Time { return now }
	set.publish([]string{"c:1", "a:1", "b:1", "a:1"})
	eps, _ := set.current()
	if !slices.Equal(eps, []string{"a:1", "b:1", "c:1"}) {
		t.Fatalf("endpoints %v, want sorted without duplicates", eps)
	}
	set.eject("b:1", 2*time.Second)
	var picks []string
	for range 4 {
		ep, _ := set.pick(eps, nil)
		picks = append(picks, ep)
	}
	if slices.Contains(picks, "b:1") {
		t.Errorf("ejected endpoint picked: %v", picks)
	}
	if got := set.ejectedNow(); !slices.Equal(got, []string{"b:1"}) {
		t.Errorf("ejected %v, want [b:1]", got)
	}
	if _, ok := set.pick(eps, []string{"a:1", "c:1"}); ok {
		t.Error("pick found an endpoint though the others were tried and b:1 is ejected")
	}
	now = now.Add(3 * time.Second)
	if ep, ok := set.pick(eps, []string{"a:1", "c:1"}); !ok || ep != "b:1" {
		t.Errorf("after the backoff pick = %q, %v; want b:1", ep, ok)
	}
	set.eject("c:1", time.Hour)
	set.publish([]string{"a:1", "b:1"})
	if got := set.ejectedNow(); len(got) != 0 {
		t.Errorf("ejection of a removed endpoint survived: %v", got)
	}
}

// TestEndpointSetConcurrentPicks picks from many goroutines while all endpoints but one are ejected: every pick must
// find that one. A pick that advanced the shared counter once per probe let concurrent picks skip it.
func TestEndpointSetConcurrentPicks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		eps     []string
		ejected []string
		want    string
	}{
		{"one of two ejected", []string{"a:1", "b:1"}, []string{"a:1"}, "b:1"},
		{"two of three ejected", []string{"a:1", "b:1", "c:1"}, []string{"a:1", "c:1"}, "b:1"},
		{"four of five ejected", []string{"a:1", "b:1", "c:1", "d:1", "e:1"}, []string{"a:1", "b:1", "c:1", "e:1"}, "d:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set := newEndpointSet(nil)
			set.publish(tt.eps)
			for _, ep := range tt.ejected {
				set.eject(ep, time.Hour)
			}
			eps, _ := set.current()
			const goroutines, picks = 8, 20000
			var wrong atomic.Int64
			var wg sync.WaitGroup
			for range goroutines {
				wg.Go(func() {
					for range picks {
						if ep, ok := set.pick(eps, nil); !ok || ep != tt.want {
							wrong.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if n := wrong.Load(); n != 0 {
				t.Errorf("%d of %d concurrent picks did not return %s, the only endpoint not ejected", n, goroutines*picks, tt.want)
			}
		})
	}
}

// TestEndpointSetRoundRobin checks that sequential picks take turns, skipping ejected and tried endpoints.
func TestEndpointSetRoundRobin(t *testing.T) {
	t.Parallel()
	set := newEndpointSet(nil)
	set.publish([]string{"a:1", "b:1", "c:1"})
	eps, _ := set.current()
	var got []string
	for range 6 {
		ep, _ := set.pick(eps, nil)
		got = append(got, ep)
	}
	if want := []string{"a:1", "b:1", "c:1", "a:1", "b:1", "c:1"}; !slices.Equal(got, want) {
		t.Errorf("picks %v, want %v", got, want)
	}
	if ep, ok := set.pick(eps, []string{"a:1", "b:1"}); !ok || ep != "c:1" {
		t.Errorf("pick with a:1 and b:1 tried = %q, %v; want c:1", ep, ok)
	}
	if ep, ok := set.pick(nil, nil); ok {
		t.Errorf("pick from an empty set = %q, want none", ep)
	}
}

// TestEndpointSetEjectionExpiresUnderLoad lets an ejection expire while goroutines pick: no pick fails before, during
// or after, and the endpoint is picked again once its backoff has passed.
func TestEndpointSetEjectionExpiresUnderLoad(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64 // unix nanoseconds
	clock.Store(time.Unix(1000, 0).UnixNano())
	set := newEndpointSet(nil)
	set.now = func() time.Time { return time.Unix(0, clock.Load()) }
	set.publish([]string{"a:1", "b:1"})
	set.eject("a:1", 2*time.Second)
	eps, _ := set.current()

	var failed atomic.Int64
	expired := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := 0; i < 5000; i++ {
				ep, ok := set.pick(eps, nil)
				switch {
				case !ok:
					failed.Add(1)
				case ep == "a:1":
					select {
					case <-expired:
					default:
						failed.Add(1) // picked while still ejected
					}
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			_ = set.ejectedNow()
		}
		close(expired)
		clock.Add(int64(3 * time.Second))
	})
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d picks failed or returned the ejected endpoint", n)
	}
	// Whatever the interleaving, the expiry is visible now.
	if ep, ok := set.pick(eps, []string{"b:1"}); !ok || ep != "a:1" {
		t.Errorf("after the backoff pick = %q, %v; want a:1", ep, ok)
	}
	if got := set.ejectedNow(); len(got) != 0 {
		t.Errorf("ejected after expiry: %v", got)
	}
}

// TestEndpointSetReplacedWhilePicking publishes new sets while goroutines pick from whatever set is current and eject
// what they picked from older sets. Every pick succeeds (each set has an endpoint that is never ejected), and an
// ejection of an endpoint that discovery has removed is not recorded.
func TestEndpointSetReplacedWhilePicking(t *testing.T) {
	t.Parallel()
	set := newEndpointSet(nil)
	sets := [][]string{{"a:1", "b:1", "keep:1"}, {"c:1", "d:1", "keep:1"}, {"e:1", "keep:1"}}
	set.publish(sets[0])
	stop := make(chan struct{})
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				eps, _ := set.current()
				ep, ok := set.pick(eps, nil)
				if !ok || !slices.Contains(eps, ep) {
					failed.Add(1)
					continue
				}
				if ep != "keep:1" {
					set.eject(ep, time.Hour)
				}
			}
		})
	}
	for i := range 300 {
		set.publish(sets[i%len(sets)])
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d picks failed while the set was replaced", n)
	}

	set.publish([]string{"x:1", "keep:1"})
	set.eject("a:1", time.Hour) // dialled from an older set
	set.eject("x:1", time.Hour)
	if got := set.ejectedNow(); !slices.Equal(got, []string{"x:1"}) {
		t.Errorf("ejected %v, want only x:1 (a:1 is no longer an endpoint)", got)
	}
}

// TestAttempts walks one request's attempts: each endpoint at most once, and once more from a set published while
// the request was failing over.
func TestAttempts(t *testing.T) {
	t.Parallel()
	set := newEndpointSet(nil)
	set.publish([]string{"old1:1", "old2:1"})
	eps, _ := set.current()

	try := set.attempts(eps)
	var got []string
	for {
		ep, ok := try.next()
		if !ok {
			break
		}
		got = append(got, ep)
		set.eject(ep, time.Hour) // refused
		if len(got) == 1 {
			set.publish([]string{"new:1", "old2:1"}) // the backend rolls during the request
		}
	}
	if want := []string{"old1:1", "old2:1", "new:1"}; len(got) != 3 || !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Errorf("attempts %v, want each of %v once", got, want)
	}

	// Without a new set, a request stops after the endpoints it has.
	set.publish([]string{"p:1", "q:1"})
	eps, _ = set.current()
	try = set.attempts(eps)
	n := 0
	for _, ok := try.next(); ok; _, ok = try.next() {
		n++
	}
	if n != 2 {
		t.Errorf("%d attempts on a two-endpoint set, want 2", n)
	}
}
