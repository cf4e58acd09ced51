// Package config holds kedge's configuration: the static Config set by flags, and the dynamic director and
// backendpool documents, which it reads (JSON or YAML), validates whole (every problem reported with file, field
// path and reason), converts into the route and backend domain types, and reloads live when the files change.
//
// Only this package imports the generated config protos; everything past it uses domain types.
package config

import (
	"errors"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/document"
	"github.com/kedge-proxy/kedge/proto/kedgeconfig"
)

// Names under which inline documents are reported, after the flags that carry them.
const (
	directorInlineName    = "--kedge_config_director_config"
	backendpoolInlineName = "--kedge_config_backendpool_config"
)

// Source names where each document comes from: a file path and/or inline content (the original's
// --kedge_config_director_config and --kedge_config_director_config_path flags; the file wins when both are set;
// neither set = empty document).
type Source struct {
	// DirectorPath and DirectorInline give the director document (routes and adhoc rules).
	DirectorPath, DirectorInline string
	// BackendpoolPath and BackendpoolInline give the backendpool document (backends).
	BackendpoolPath, BackendpoolInline string
}

// Dynamic is one complete, validated dynamic configuration in domain types.
type Dynamic struct {
	// HTTPRoutes and GRPCRoutes are in document order (first match wins); every route names an existing backend of
	// its protocol.
	HTTPRoutes []route.HTTPRoute
	GRPCRoutes []route.GRPCRoute
	// HTTPAdhoc and GRPCAdhoc are the adhoc rules, in document order.
	HTTPAdhoc []route.Adhoc
	GRPCAdhoc []route.Adhoc
	// Backends holds the backends of both protocols (Spec.Protocol set), HTTP first, each in document order.
	Backends []backend.Spec
	// Warnings are non-fatal findings, each naming file and field.
	Warnings []string
}

// FieldError is one problem in a document ("director.yaml: http.routes[2].backend_name: reason"). Load and Parse
// return errors.Join of *FieldError, so every problem is listed; FieldErrors takes them apart again.
type FieldError = document.FieldError

// FieldErrors returns every *FieldError inside err (which may be a tree of joined and wrapped errors), in order.
func FieldErrors(err error) []*FieldError { return document.FieldErrors(err) }

// Load reads the documents src names, then parses, validates and converts them like Parse. It also checks that the
// certificate and key files named in backend security settings can be read and parsed.
func Load(src Source) (*Dynamic, error) {
	dir, dirName, dirErr := document.Read(src.DirectorPath, src.DirectorInline, directorInlineName)
	pool, poolName, poolErr := document.Read(src.BackendpoolPath, src.BackendpoolInline, backendpoolInlineName)
	if dirErr != nil || poolErr != nil {
		return nil, errors.Join(dirErr, poolErr)
	}
	return parse(dir, pool, dirName, poolName, true)
}

// Parse is Load without I/O: director and backendpool are the documents' contents (JSON or YAML; empty means an
// empty document), the names are used in errors and warnings. Files named in the documents are not opened.
func Parse(director, backendpool []byte, directorName, backendpoolName string) (*Dynamic, error) {
	return parse(director, backendpool, directorName, backendpoolName, false)
}

func parse(director, backendpool []byte, directorName, backendpoolName string, checkFiles bool) (*Dynamic, error) {
	dir := &kedgeconfig.DirectorConfig{}
	pool := &kedgeconfig.BackendPoolConfig{}
	// The first problem of each document, at its JSON path: kedge's messages name protojson's reasons, and enum
	// numbers the schema does not know are left for the validator to report.
	dirErr := document.Decode(directorName, director, dir, document.FirstProblem)
	poolErr := document.Decode(backendpoolName, backendpool, pool, document.FirstProblem)
	if dirErr != nil || poolErr != nil {
		return nil, errors.Join(dirErr, poolErr)
	}
	v := &validator{checkFiles: checkFiles}
	names := v.backendpool(backendpoolName, pool)
	v.director(directorName, dir, names)
	v.authRules(directorName, dir, pool)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	dyn := convert(dir, pool)
	dyn.Warnings = v.warnings
	return dyn, nil
}
