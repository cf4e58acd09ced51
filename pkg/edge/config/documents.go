// Package config holds kedge's configuration: the static Config set by flags, and the dynamic director and
// backendpool documents, which it reads (JSON or YAML), validates whole (every problem reported with file, field
// path and reason), converts into the route and backend domain types, and reloads live when the files change.
//
// Only this package imports the generated config protos; everything past it uses domain types.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
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

// FieldError is one problem in a document. Load and Parse return errors.Join of *FieldError, so every problem is
// listed; FieldErrors takes them apart again.
type FieldError struct {
	// File is the document's path ("director.yaml") or, for inline content, its flag ("--kedge_config_director_config").
	File string
	// Field is the path of the offending value in JSON terms ("http.routes[2].backend_name"); "" for the whole file.
	Field string
	// Reason says what is wrong.
	Reason string
}

// Error formats the problem like a compiler diagnostic: "file: field: reason".
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.File + ": " + e.Reason
	}
	return e.File + ": " + e.Field + ": " + e.Reason
}

// FieldErrors returns every *FieldError inside err (which may be a tree of joined and wrapped errors), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			if c := u.Unwrap(); c != nil {
				walk(c)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// Load reads the documents src names, then parses, validates and converts them like Parse. It also checks that the
// certificate and key files named in backend security settings can be read and parsed.
func Load(src Source) (*Dynamic, error) {
	dir, dirName, dirErr := read(src.DirectorPath, src.DirectorInline, directorInlineName)
	pool, poolName, poolErr := read(src.BackendpoolPath, src.BackendpoolInline, backendpoolInlineName)
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
	dirErr := decode(directorName, director, dir)
	poolErr := decode(backendpoolName, backendpool, pool)
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

// read returns the document's content and the name to report it under. The file wins over inline content.
func read(path, inline, inlineName string) ([]byte, string, error) {
	if path == "" {
		return []byte(inline), inlineName, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, path, &FieldError{File: path, Reason: "reading the file: " + err.Error()}
	}
	return b, path, nil
}

// decode fills m from a JSON or YAML document. A document whose first non-space byte is '{' is JSON; anything else
// is YAML, converted to JSON first. Both then go through strict protojson, so unknown fields are errors.
func decode(name string, data []byte, m proto.Message) error {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 byte-order mark some editors write
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil
	}
	isJSON := trimmed[0] == '{'
	js := data
	if !isJSON {
		var err error
		js, err = yaml.YAMLToJSON(data)
		if err != nil {
			return &FieldError{File: name, Reason: "invalid YAML: " + strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")}
		}
		js = bytes.TrimSpace(js)
		if string(js) == "null" { // only comments or "---"
			return nil
		}
		if len(js) == 0 || js[0] != '{' {
			return &FieldError{File: name, Reason: "the document must be a map of fields, like {\"http\": {...}}"}
		}
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, m); err != nil {
		return decodeError(name, js, err, isJSON)
	}
	return nil
}

// protojsonPosition finds the "(line L:C): reason" part of a protojson error.
var protojsonPosition = regexp.MustCompile(`\(line (\d+):(\d+)\): (.*)$`)

// oneofSet matches protojson's complaint about a second member of a oneof.
var oneofSet = regexp.MustCompile(`^error parsing "?([A-Za-z_0-9]+)"?, oneof [A-Za-z_.0-9]+\.([a-z_]+) is already set$`)

// invalidValue matches protojson's complaint about a value of the wrong type; the field is named by the path.
var invalidValue = regexp.MustCompile(`^invalid value for (\w+) field \w+: (.*)$`)

// decodeError turns a protojson error into a FieldError whose Field is the JSON path of the offending token. The
// line and column are only meaningful (and only reported) for documents that were JSON to begin with.
func decodeError(name string, js []byte, err error, isJSON bool) error {
	msg := err.Error()
	sub := protojsonPosition.FindStringSubmatch(msg)
	if sub == nil {
		// No position (e.g. nesting too deep); strip the "proto:" prefix, whose space may be non-breaking.
		if i := strings.Index(msg, ":"); i >= 0 && strings.HasPrefix(msg, "proto") {
			msg = strings.TrimSpace(strings.TrimLeft(msg[i+1:], " \u00a0"))
		}
		return &FieldError{File: name, Reason: msg}
	}
	line, _ := strconv.Atoi(sub[1])
	col, _ := strconv.Atoi(sub[2])
	reason := sub[3]
	if m := oneofSet.FindStringSubmatch(reason); m != nil {
		reason = fmt.Sprintf("only one %s may be set (srv, k8s or host); %q is a second one", m[2], m[1])
	}
	if m := invalidValue.FindStringSubmatch(reason); m != nil {
		reason = fmt.Sprintf("invalid value %s for a field of type %s", m[2], m[1])
	}
	if isJSON {
		reason += fmt.Sprintf(" (line %d, column %d)", line, col)
	}
	return &FieldError{File: name, Field: jsonPathAt(js, offsetOf(js, line, col)), Reason: reason}
}

// offsetOf converts protojson's 1-based line and column (counted in runes) into a byte offset of js.
func offsetOf(js []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(js[off:], '\n')
		if i < 0 {
			return len(js)
		}
		off += i + 1
	}
	for c := 1; c < col && off < len(js); c++ {
		_, size := utf8.DecodeRune(js[off:])
		off += size
	}
	return off
}

// jsonPathAt returns the path ("http.routes[2].backend_name") of the token that starts at byte offset off of js: a
// member name yields the member's path, a value the path of that value. If js is malformed before off, it returns
// the path reached so far.
func jsonPathAt(js []byte, off int) string {
	type frame struct {
		path      string
		array     bool
		index     int
		expectKey bool
		key       string
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	// current is the path of the value about to be read in the innermost container.
	current := func() string {
		if len(stack) == 0 {
			return ""
		}
		top := stack[len(stack)-1]
		if top.array {
			return fmt.Sprintf("%s[%d]", top.path, top.index)
		}
		return joinPath(top.path, top.key)
	}
	// done records that a value ended in the innermost container.
	done := func() {
		if len(stack) == 0 {
			return
		}
		top := stack[len(stack)-1]
		if top.array {
			top.index++
		} else {
			top.expectKey = true
		}
	}
	last := ""
	for range len(js) + 1 { // every token consumes at least one byte
		tok, err := dec.Token()
		if err != nil {
			return last
		}
		end := int(dec.InputOffset())
		if len(stack) > 0 && stack[len(stack)-1].expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				done()
				continue
			}
			top := stack[len(stack)-1]
			top.key, _ = tok.(string)
			top.expectKey = false
			last = joinPath(top.path, top.key)
			if end > off {
				return last
			}
			continue
		}
		path := current()
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				last = path
				if end > off {
					return path
				}
				stack = append(stack, &frame{path: path, array: d == '[', expectKey: d == '{'})
			case '}', ']':
				stack = stack[:len(stack)-1]
				done()
			}
			continue
		}
		last = path
		if end > off {
			return path
		}
		done()
	}
	return last
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
