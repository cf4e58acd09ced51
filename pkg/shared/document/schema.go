package document

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxDepth bounds the nesting of a document in AllProblems mode; config documents are a handful of levels deep.
const maxDepth = 32

// kind is the JSON type of a node.
type kind uint8

const (
	kindNull kind = iota
	kindObject
	kindArray
	kindString
	kindNumber
	kindBool
)

func (k kind) String() string {
	return [...]string{"null", "an object", "a list", "a string", "a number", "true or false"}[k]
}

// node is a parsed JSON value that keeps the order of object members.
type node struct {
	kind  kind
	keys  []string // object member names, in order
	vals  []*node  // object member values (kindObject) or list elements (kindArray)
	str   string   // string value, or the number's text
	truth bool
}

// parseJSON parses one JSON value, with nothing but white space after it.
func parseJSON(js []byte) (*node, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	n, err := parseValue(dec, 0)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("unexpected data after the document")
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("unexpected end of the document")
	}
	if err != nil {
		line, col := position(js, dec.InputOffset())
		return nil, fmt.Errorf("invalid JSON at line %d, column %d: %s", line, col, strings.TrimPrefix(err.Error(), "json: "))
	}
	return n, nil
}

func parseValue(dec *json.Decoder, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		n := &node{kind: kindArray}
		if v == '{' {
			n.kind = kindObject
		}
		for dec.More() {
			if n.kind == kindObject {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, _ := k.(string)
				n.keys = append(n.keys, key)
			}
			child, err := parseValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			n.vals = append(n.vals, child)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &node{kind: kindString, str: v}, nil
	case json.Number:
		return &node{kind: kindNumber, str: v.String()}, nil
	case bool:
		return &node{kind: kindBool, truth: v}, nil
	default:
		return &node{kind: kindNull}, nil
	}
}

// position converts a byte offset of js into a 1-based line and column.
func position(js []byte, off int64) (line, col int) {
	if off > int64(len(js)) {
		off = int64(len(js))
	}
	before := js[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// schemaCheck compares a JSON tree with a message descriptor the way protojson reads it, collecting every problem.
type schemaCheck struct {
	file string
	errs []error
}

func (s *schemaCheck) fail(path, format string, args ...any) {
	s.errs = append(s.errs, &FieldError{File: s.file, Field: path, Reason: fmt.Sprintf(format, args...)})
}

// message checks an object against md.
func (s *schemaCheck) message(md protoreflect.MessageDescriptor, n *node, path string) {
	fields := md.Fields()
	seen := map[protoreflect.FieldNumber]string{}
	oneofs := map[protoreflect.FullName]string{}
	for i, key := range n.keys {
		val := n.vals[i]
		p := joinPath(path, key)
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByTextName(key)
		}
		if fd == nil {
			s.fail(p, "unknown field %s; the fields here are %s", strconv.Quote(key), fieldNames(md))
			continue
		}
		if prev, dup := seen[fd.Number()]; dup {
			s.fail(p, "%s is set twice (also as %s)", fd.Name(), strconv.Quote(prev))
			continue
		}
		seen[fd.Number()] = key
		if od := fd.ContainingOneof(); od != nil && val.kind != kindNull {
			if prev, set := oneofs[od.FullName()]; set {
				s.fail(p, "only one of %s may be set; %s is set too", oneofNames(od), strconv.Quote(prev))
				continue
			}
			oneofs[od.FullName()] = key
		}
		switch {
		case val.kind == kindNull:
		case fd.IsList():
			if val.kind != kindArray {
				s.fail(p, "must be a list, not %s", val.kind)
				continue
			}
			for j, el := range val.vals {
				s.value(fd, el, fmt.Sprintf("%s[%d]", p, j))
			}
		case fd.IsMap():
			if val.kind != kindObject {
				s.fail(p, "must be a map, not %s", val.kind)
				continue
			}
			for j, k := range val.keys {
				s.value(fd.MapValue(), val.vals[j], joinPath(p, k))
			}
		default:
			s.value(fd, val, p)
		}
	}
}

// value checks one (non-list) value of field fd.
func (s *schemaCheck) value(fd protoreflect.FieldDescriptor, n *node, path string) {
	want := kindString
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if n.kind != kindObject {
			s.fail(path, "must be an object, not %s", n.kind)
			return
		}
		s.message(fd.Message(), n, path)
		return
	case protoreflect.EnumKind:
		s.enum(fd.Enum(), n, path)
		return
	case protoreflect.BoolKind:
		want = kindBool
	case protoreflect.StringKind, protoreflect.BytesKind:
		want = kindString
	default: // numbers, which protojson also accepts as strings
		if n.kind == kindNumber || n.kind == kindString {
			return
		}
		want = kindNumber
	}
	if n.kind != want {
		s.fail(path, "must be %s, not %s", want, n.kind)
	}
}

// enum checks that n names a value of ed, by name or number.
func (s *schemaCheck) enum(ed protoreflect.EnumDescriptor, n *node, path string) {
	switch n.kind {
	case kindString:
		if ed.Values().ByName(protoreflect.Name(n.str)) != nil {
			return
		}
	case kindNumber:
		if v, err := strconv.ParseInt(n.str, 10, 32); err == nil && ed.Values().ByNumber(protoreflect.EnumNumber(v)) != nil {
			return
		}
	}
	var names []string
	for i := 0; i < ed.Values().Len(); i++ {
		names = append(names, string(ed.Values().Get(i).Name()))
	}
	shown := n.str
	if n.kind != kindString && n.kind != kindNumber {
		shown = n.kind.String()
	} else if n.kind == kindString {
		shown = strconv.Quote(n.str)
	}
	s.fail(path, "unknown value %s; one of %s", shown, strings.Join(names, ", "))
}

func fieldNames(md protoreflect.MessageDescriptor) string {
	var names []string
	for i := 0; i < md.Fields().Len(); i++ {
		names = append(names, string(md.Fields().Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func oneofNames(od protoreflect.OneofDescriptor) string {
	var names []string
	for i := 0; i < od.Fields().Len(); i++ {
		names = append(names, string(od.Fields().Get(i).Name()))
	}
	return strings.Join(names, ", ")
}
