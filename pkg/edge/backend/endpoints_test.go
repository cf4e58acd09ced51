package backend

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func TestDNSSourceResolve(t *testing.T) {
	t.Parallel()
	dns := newFakeDNS()
	dns.setHost("svc.test", "10.0.0.2", "10.0.0.1", "fd00::1")
	dns.setHost("a.test", "10.1.0.1")
	dns.setHost("b.test", "10.1.0.2", "10.1.0.3")
	dns.setSRV("_http._tcp.svc.test",
		&net.SRV{Target: "a.test.", Port: 8080},
		&net.SRV{Target: "b.test.", Port: 9090},
		&net.SRV{Target: ".", Port: 1},
	)
	dns.setSRV("_http._tcp.partial.test", &net.SRV{Target: "a.test.", Port: 80}, &net.SRV{Target: "missing.test.", Port: 80})
	dns.setSRV("_http._tcp.ip.test", &net.SRV{Target: "10.9.9.9", Port: 80})
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
	dns := newFakeDNS()
	dns.setHost("svc.test", "10.0.0.1")
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
	waitFor(t, "first resolution", 5*time.Second, func() bool { return slices.Equal(current(), []string{"10.0.0.1:80"}) })
	dns.setFail("svc.test", errors.New("SERVFAIL"))
	waitFor(t, "a counted failure", 5*time.Second, func() bool { return errorsSeen.Load() >= 2 })
	if got := current(); !slices.Equal(got, []string{"10.0.0.1:80"}) {
		t.Errorf("after DNS failures endpoints are %v, want the last good ones", got)
	}
	dns.setHost("svc.test", "10.0.0.2")
	waitFor(t, "recovery", 5*time.Second, func() bool { return slices.Equal(current(), []string{"10.0.0.2:80"}) })
}

func TestDNSSourcePublishesFirstFailure(t *testing.T) {
	t.Parallel()
	src := &dnsSource{
		dns:      newFakeDNS(),
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
