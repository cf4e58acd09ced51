package document

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// Mode chooses how Decode finds the problems of a document that does not fit its message.
type Mode uint8

const (
	// FirstProblem decodes with strict protojson and reports the first problem it meets, at the JSON path of the
	// offending token, with line and column for documents written as JSON. Enum numbers the schema does not know
	// are accepted (protojson keeps them), so that the caller's validation can name them.
	FirstProblem Mode = iota
	// AllProblems first checks the whole document against the message's schema and reports every unknown field,
	// mistyped value, unknown enum value, field set twice and second member of a oneof at once, each with its path;
	// it also refuses documents nested deeper than 32 levels. Strict protojson then does the decoding.
	AllProblems
)

// Decode fills m from data, a JSON or YAML document reported as name. A document whose first non-space byte is '{'
// is JSON; anything else is YAML (duplicate keys refused), converted to JSON first. An empty document, or one of
// only YAML comments, leaves m as it is. Unknown fields are errors. Every error is a *FieldError or errors.Join of
// them.
func Decode(name string, data []byte, m proto.Message, mode Mode) error {
	md := m.ProtoReflect().Descriptor()
	js, isJSON, err := toJSON(name, data, md)
	if err != nil || js == nil {
		return err
	}
	if mode == AllProblems {
		root, err := parseJSON(js)
		if err != nil {
			return &FieldError{File: name, Reason: err.Error()}
		}
		s := &schemaCheck{file: name}
		s.message(md, root, "")
		if len(s.errs) > 0 {
			return errors.Join(s.errs...)
		}
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, m); err != nil {
		return unmarshalError(name, js, err, isJSON, md)
	}
	return nil
}

// toJSON returns the document as JSON, and whether it was written as JSON. It returns nil JSON (and no error) for
// an empty document. JSON is returned untrimmed, so that line numbers in errors are those of the file.
func toJSON(name string, data []byte, md protoreflect.MessageDescriptor) (js []byte, isJSON bool, err error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 byte-order mark some editors write
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, false, nil
	}
	if !utf8.Valid(data) {
		bad := 0
		for bad < len(data) {
			r, size := utf8.DecodeRune(data[bad:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			bad += size
		}
		line, col := position(data, int64(bad))
		return nil, false, &FieldError{File: name, Reason: fmt.Sprintf("not valid UTF-8 at line %d, column %d", line, col)}
	}
	if trimmed[0] == '{' {
		return data, true, nil
	}
	js, err = yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, false, &FieldError{File: name, Reason: "invalid YAML: " + strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")}
	}
	js = bytes.TrimSpace(js)
	if string(js) == "null" { // only comments or "---"
		return nil, false, nil
	}
	if len(js) == 0 || js[0] != '{' {
		example := "name"
		if md.Fields().Len() > 0 {
			example = string(md.Fields().Get(0).Name())
		}
		return nil, false, &FieldError{File: name, Reason: fmt.Sprintf("the document must be a map of fields, like {%q: ...}", example)}
	}
	return js, false, nil
}

// protojsonPosition finds the "(line L:C): reason" part of a protojson error.
var protojsonPosition = regexp.MustCompile(`\(line (\d+):(\d+)\): (.*)$`)

// oneofSet matches protojson's complaint about a second member of a oneof.
var oneofSet = regexp.MustCompile(`^error parsing "?([A-Za-z_0-9]+)"?, oneof ([A-Za-z_.0-9]+) is already set$`)

// invalidValue matches protojson's complaint about a value of the wrong type; the field is named by the path.
var invalidValue = regexp.MustCompile(`^invalid value for (\w+) field \w+: (.*)$`)

// unmarshalError turns a protojson error into a FieldError whose Field is the JSON path of the offending token. The
// line and column are only meaningful (and only reported) for documents that were JSON to begin with.
func unmarshalError(name string, js []byte, err error, isJSON bool, md protoreflect.MessageDescriptor) error {
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
		full := protoreflect.FullName(m[2])
		reason = fmt.Sprintf("only one %s may be set", full.Name())
		if od := findOneof(md, full, map[protoreflect.FullName]bool{}); od != nil {
			reason += " (" + alternatives(od) + ")"
		}
		reason += fmt.Sprintf("; %q is a second one", m[1])
	}
	if m := invalidValue.FindStringSubmatch(reason); m != nil {
		reason = fmt.Sprintf("invalid value %s for a field of type %s", m[2], m[1])
	}
	if isJSON {
		reason += fmt.Sprintf(" (line %d, column %d)", line, col)
	}
	return &FieldError{File: name, Field: jsonPathAt(js, offsetOf(js, line, col)), Reason: reason}
}

// findOneof returns the oneof called full in md or any message reachable from it; seen guards against recursion.
func findOneof(md protoreflect.MessageDescriptor, full protoreflect.FullName, seen map[protoreflect.FullName]bool) protoreflect.OneofDescriptor {
	if seen[md.FullName()] {
		return nil
	}
	seen[md.FullName()] = true
	if od := md.Oneofs().ByName(full.Name()); od != nil && od.FullName() == full {
		return od
	}
	for i := 0; i < md.Fields().Len(); i++ {
		if sub := md.Fields().Get(i).Message(); sub != nil {
			if od := findOneof(sub, full, seen); od != nil {
				return od
			}
		}
	}
	return nil
}

// alternatives lists a oneof's members in declaration order: "srv, k8s or host".
func alternatives(od protoreflect.OneofDescriptor) string {
	var names []string
	for i := 0; i < od.Fields().Len(); i++ {
		names = append(names, string(od.Fields().Get(i).Name()))
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
