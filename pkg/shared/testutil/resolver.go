package testutil

import (
	"context"
	"net"
	"sync"
)

// Resolver is a fake DNS: it answers LookupHost and LookupSRV from maps set by the test, so code that takes a
// resolver (backend.DNSResolver and the interfaces the proxies declare) can be tested without the network. A name
// that is not set answers "no such host" (a *net.DNSError with IsNotFound), as a real resolver does; a name set with
// Fail answers that error. It is safe for concurrent use, and a test may change it while the code under test runs.
type Resolver struct {
	mu    sync.Mutex
	hosts map[string][]string
	srvs  map[string][]*net.SRV
	fail  map[string]error
}

// NewResolver returns a Resolver that knows hosts (name -> addresses) and nothing else.
func NewResolver(hosts map[string][]string) *Resolver {
	r := &Resolver{hosts: map[string][]string{}, srvs: map[string][]*net.SRV{}, fail: map[string]error{}}
	for name, addrs := range hosts {
		r.SetHost(name, addrs...)
	}
	return r
}

// SetHost makes name resolve to addrs, replacing what it answered before (an error too).
func (r *Resolver) SetHost(name string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hosts[name] = append([]string(nil), addrs...)
	delete(r.fail, name)
}

// SetSRV makes the SRV name (e.g. "_http._tcp.svc.test") answer recs, replacing what it answered before.
func (r *Resolver) SetSRV(name string, recs ...*net.SRV) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.srvs[name] = recs
	delete(r.fail, name)
}

// Fail makes every lookup of name, host or SRV, answer err until it is set again.
func (r *Resolver) Fail(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail[name] = err
}

// LookupHost answers what SetHost set for host.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fail[host]; err != nil {
		return nil, err
	}
	addrs, ok := r.hosts[host]
	if !ok {
		return nil, notFound(host)
	}
	return append([]string(nil), addrs...), nil
}

// LookupSRV answers what SetSRV set for name (service and proto are not looked at: the name is the whole SRV name),
// with copies of the records so the caller cannot change the Resolver's.
func (r *Resolver) LookupSRV(ctx context.Context, _, _, name string) (string, []*net.SRV, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fail[name]; err != nil {
		return "", nil, err
	}
	recs, ok := r.srvs[name]
	if !ok {
		return "", nil, notFound(name)
	}
	out := make([]*net.SRV, len(recs))
	for i, rec := range recs {
		c := *rec
		out[i] = &c
	}
	return name, out, nil
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
