package edge

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// tables is one immutable routing snapshot.
type tables struct {
	http *route.HTTPTable
	grpc *route.GRPCTable
	dyn  *config.Dynamic
}

// state holds the routing snapshot that requests read without locks; apply swaps it.
type state struct {
	current atomic.Pointer[tables]
	mu      sync.Mutex // serialises apply
}

func newState(dyn *config.Dynamic) (*state, error) {
	t, err := compile(dyn)
	if err != nil {
		return nil, err
	}
	s := &state{}
	s.current.Store(t)
	return s, nil
}

func compile(dyn *config.Dynamic) (*tables, error) {
	h, err := route.NewHTTPTable(dyn.HTTPRoutes, dyn.HTTPAdhoc)
	if err != nil {
		return nil, fmt.Errorf("http routes: %w", err)
	}
	g, err := route.NewGRPCTable(dyn.GRPCRoutes, dyn.GRPCAdhoc)
	if err != nil {
		return nil, fmt.Errorf("grpc routes: %w", err)
	}
	return &tables{http: h, grpc: g, dyn: dyn}, nil
}

// HTTPTable implements httpproxy.Routes.
func (s *state) HTTPTable() *route.HTTPTable { return s.current.Load().http }

// GRPCTable implements grpcproxy.Routes.
func (s *state) GRPCTable() *route.GRPCTable { return s.current.Load().grpc }

// apply swaps in a new dynamic config without failing a request: first the pool gains the new and changed backends
// while keeping the removed ones, then the routes switch, then the removed backends drain. A request that picked a
// route from the old table therefore always finds its backend.
func (s *Server) apply(dyn *config.Dynamic) error {
	s.state.mu.Lock()
	defer s.state.mu.Unlock()
	next, err := compile(dyn)
	if err != nil {
		return err
	}
	old := s.state.current.Load()
	if err := s.pool.Update(union(dyn.Backends, old.dyn.Backends)); err != nil {
		return fmt.Errorf("building backends: %w", err)
	}
	s.state.current.Store(next)
	if err := s.pool.Update(dyn.Backends); err != nil {
		// Cannot happen for specs the first Update accepted; keep serving and say so.
		s.log.Error("config applied, but the backends it dropped could not be removed; they stay open until the next config change",
			"error", err)
	}
	for _, w := range s.cfg.Warnings(dyn) {
		s.log.Warn("config warning", "warning", w)
	}
	s.log.Info("config applied", "http_routes", len(dyn.HTTPRoutes), "grpc_routes", len(dyn.GRPCRoutes), "backends", len(dyn.Backends))
	return nil
}

// union returns next plus the backends of prev whose name (per protocol) next no longer has.
func union(next, prev []backend.Spec) []backend.Spec {
	type key struct {
		p    backend.Protocol
		name string
	}
	have := make(map[key]bool, len(next))
	out := append(make([]backend.Spec, 0, len(next)+len(prev)), next...)
	for _, b := range next {
		have[key{b.Protocol, b.Name}] = true
	}
	for _, b := range prev {
		if !have[key{b.Protocol, b.Name}] {
			out = append(out, b)
		}
	}
	return out
}

// effectiveConfig is what /debug/config shows: the routes in force and the backends with their endpoints.
func (s *Server) effectiveConfig() any {
	t := s.state.current.Load()
	return map[string]any{
		"http_routes": t.http.Routes(),
		"http_adhoc":  t.dyn.HTTPAdhoc,
		"grpc_routes": t.grpc.Routes(),
		"grpc_adhoc":  t.dyn.GRPCAdhoc,
		"backends":    s.pool.Snapshot(),
		"warnings":    t.dyn.Warnings,
	}
}
