package edge

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// tables is one immutable routing snapshot.
type tables struct {
	http *route.HTTPTable
	grpc *route.GRPCTable
	dyn  *config.Dynamic
	// warnings are what Config.Warnings says of dyn, as logged when it was applied and shown by /debug/config.
	warnings []string
}

// state is the running dynamic config: the routing snapshot that requests read without locks, and the two inputs
// it was merged from. Both inputs change through Server.applyFile and Server.applyDiscovered, which take mu, so
// changes never overlap and each one merges with the latest of the other input.
type state struct {
	current atomic.Pointer[tables]

	mu      sync.Mutex         // serialises changes; guards file, found and applied
	file    *config.Dynamic    // the file config in force
	found   *config.Discovered // the discovered config in force; nil until discovery first applies (or without it)
	applied bool               // a change was applied (and logged) since startup
}

// newState compiles the initial file config, of which startup logged warnings; nothing is discovered yet.
func newState(file *config.Dynamic, warnings []string) (*state, error) {
	t, err := compile(file)
	if err != nil {
		return nil, err
	}
	t.warnings = warnings
	s := &state{file: file}
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

// applyFile is the config watcher's apply step: file (loaded and validated by the watcher) is merged with the
// discovered config in force and swapped in. On error nothing changed.
func (s *Server) applyFile(file *config.Dynamic) error {
	s.state.mu.Lock()
	defer s.state.mu.Unlock()
	merged, rejected := config.Merge(file, s.state.found)
	if err := s.swap(merged); err != nil {
		return err
	}
	s.state.file = file
	for _, r := range rejected {
		s.log.Warn("service skipped by discovery after a config reload", "service", r.Source, logging.FieldError, r.Err)
	}
	return nil
}

// applyDiscovered is discovery's Applier: gens are checked, merged with the file config in force and swapped in.
// On error nothing changed.
func (s *Server) applyDiscovered(gens []config.Generated) ([]config.Rejected, error) {
	found := config.Check(gens) // outside the lock: it reads only gens
	s.state.mu.Lock()
	defer s.state.mu.Unlock()
	merged, rejected := config.Merge(s.state.file, found)
	if err := s.swap(merged); err != nil {
		return nil, err
	}
	s.state.found = found
	return rejected, nil
}

// swap puts a merged dynamic config in force without failing a request: first the pool gains the new and changed
// backends while keeping the removed ones, then the routes switch, then the removed backends drain. A request that
// picked a route from the old table therefore always finds its backend. The caller holds s.state.mu.
func (s *Server) swap(dyn *config.Dynamic) error {
	next, err := compile(dyn)
	if err != nil {
		return err
	}
	old := s.state.current.Load()
	if err := s.pool.Update(union(dyn.Backends, old.dyn.Backends)); err != nil {
		return fmt.Errorf("building backends: %w", err)
	}
	next.warnings = s.cfg.Warnings(dyn)
	s.state.current.Store(next)
	if err := s.pool.Update(dyn.Backends); err != nil {
		// Cannot happen for specs the first Update accepted; keep serving and say so.
		s.log.Error("config applied, but the backends it dropped could not be removed; they stay open until the next config change",
			"error", err)
	}
	// A warning is logged when it first applies, not again with every change: at startup with discovery, the file
	// config's warnings were logged by New and the first discovered config repeats them. "config applied" is logged
	// for the first change (discovery's first result) and then for every change that changed something.
	for _, w := range next.warnings {
		if !slices.Contains(old.warnings, w) {
			s.log.Warn("config warning", "warning", w)
		}
	}
	first := !s.state.applied
	s.state.applied = true
	if !first && reflect.DeepEqual(dyn, old.dyn) {
		s.log.Debug("config unchanged", "http_routes", len(dyn.HTTPRoutes), "grpc_routes", len(dyn.GRPCRoutes), "backends", len(dyn.Backends))
		return nil
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

// effectiveConfig is what /debug/config shows: the routes in force, the backends with their endpoints and the
// warnings of the config (see debugConfig).
func (s *Server) effectiveConfig() any {
	t := s.state.current.Load()
	return newDebugConfig(t, s.pool.Snapshot())
}
