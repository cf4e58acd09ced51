// Package config reads winch's dynamic documents, the mapper config (which kedge serves which destination) and the
// auth config (named credential sources), from JSON or YAML; validates them whole, reporting every problem with
// file, field path and reason; checks that the mapper only names auth sources that exist; and converts them into
// the domain types that the rest of winch uses (mapper.Route and AuthSource).
//
// Only this package imports the generated winch config protos.
package config

import (
	"errors"

	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// Names under which documents are reported: inline ones after the flags that carry them; a mapper that was not
// given at all after the flag that should have named its file.
const (
	MapperInlineName = "--server_mapper_config"
	AuthInlineName   = "--server_auth_config"
	MapperPathName   = "--server_mapper_config_path"
	AuthPathName     = "--server_auth_config_path"
)

// Source names where each document comes from: a file path and/or inline content (the original's
// --server_mapper_config and --server_mapper_config_path flags, and the same pair for auth). The file wins when both
// are set; neither set means an empty document, which is an error for the mapper (it needs routes) and fine for auth.
type Source struct {
	MapperPath, MapperInline string
	AuthPath, AuthInline     string
}

// Dynamic is winch's complete, validated dynamic configuration: both documents, cross-checked.
type Dynamic struct {
	// Mapper holds the routes, in document order.
	Mapper *Mapper
	// Auth holds the auth sources, in document order.
	Auth *Auth
}

// Mapper is a loaded mapper document.
type Mapper struct {
	// Name is the document's path or, for inline content, its flag.
	Name string
	// Routes are the document's routes in order, ready for mapper.New.
	Routes []mapper.Route
}

// Auth is a loaded auth document.
type Auth struct {
	// Name is the document's path or, for inline content, its flag; "" when no auth document was given.
	Name string
	// Sources are the document's auth sources in order; names are unique.
	Sources []AuthSource
}

// In says where the sources come from, for messages about a source that is not there: "in auth.yaml", or, when no
// auth document was given, which flag gives one.
func (a *Auth) In() string {
	if a.Name == "" {
		return "(no auth document given: set " + AuthPathName + ")"
	}
	return "in " + a.Name
}

// Source returns the auth source called name.
func (a *Auth) Source(name string) (AuthSource, bool) {
	for _, s := range a.Sources {
		if s.Name == name {
			return s, true
		}
	}
	return AuthSource{}, false
}

// Load reads, validates and converts both documents, then checks that every proxy_auth and backend_auth in the
// mapper names a source of the auth document. It reports the problems of both documents together.
func Load(src Source) (*Dynamic, error) {
	m, mErr := LoadMapper(src.MapperPath, src.MapperInline)
	a, aErr := LoadAuth(src.AuthPath, src.AuthInline)
	if mErr != nil || aErr != nil {
		return nil, errors.Join(mErr, aErr)
	}
	if err := CheckAuthReferences(m, a); err != nil {
		return nil, err
	}
	return &Dynamic{Mapper: m, Auth: a}, nil
}

// CheckAuthReferences reports every mapper route whose proxy_auth or backend_auth names no source of a.
func CheckAuthReferences(m *Mapper, a *Auth) error {
	var errs []error
	for i, r := range m.Routes {
		for _, ref := range []struct{ field, name string }{{"proxy_auth", r.ProxyAuth}, {"backend_auth", r.BackendAuth}} {
			if ref.name == "" {
				continue
			}
			if _, ok := a.Source(ref.name); !ok {
				errs = append(errs, &FieldError{File: m.Name, Field: indexed("routes", i) + "." + ref.field,
					Reason: quote(ref.name) + ": no auth source with that name " + a.In()})
			}
		}
	}
	return errors.Join(errs...)
}
