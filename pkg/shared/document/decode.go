package document

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// Mode chooses how Decode reports the problems of a document that does not fit its message. Either way Decode
// checks the document against the message descriptor itself, so every problem is found and named (JSON path and
// reason) without relying on the wording of protojson's errors; protojson then does the decoding.
type Mode uint8

const (
	// FirstProblem reports the first problem in document order, with line and column for documents written as JSON.
	// Enum numbers the schema does not know are accepted (protojson keeps them), so that the caller's validation
	// can name them.
	FirstProblem Mode = iota
	// AllProblems reports every unknown field, mistyped value, unknown enum value, field set twice and second member
	// of a oneof at once, each with its path.
	AllProblems
)

// Decode fills m from data, a JSON or YAML document reported as name. A document whose first non-space byte is '{'
// is JSON; anything else is YAML (duplicate keys refused), converted to JSON first. An empty document, or one of
// only YAML comments, leaves m as it is. Unknown fields are errors, and documents nested deeper than 32 levels are
// refused. Every error is a *FieldError or errors.Join of them.
func Decode(name string, data []byte, m proto.Message, mode Mode) error {
	md := m.ProtoReflect().Descriptor()
	js, isJSON, err := toJSON(name, data, md)
	if err != nil || js == nil {
		return err
	}
	s := &schemaCheck{file: name, first: mode == FirstProblem}
	if s.first && isJSON {
		s.js = js
	}
	root, se := parseJSON(js)
	switch {
	case se != nil && s.first:
		s.fail(se.path, se.off, "%s", se.describe(js))
		return s.errs[0]
	case se != nil:
		line, col := position(js, se.off)
		return &FieldError{File: name, Reason: fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, se.describe(js))}
	}
	s.message(md, root, "")
	switch {
	case len(s.errs) > 0 && s.first:
		return s.errs[0]
	case len(s.errs) > 0:
		return errors.Join(s.errs...)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, m); err != nil {
		// Only for what the schema check leaves to protojson (unusual spellings of numbers, well-known types).
		return &FieldError{File: name, Reason: "cannot decode the document: " + err.Error()}
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
