package document

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxDepth bounds the nesting of a document; config documents are a handful of levels deep.
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
	kind    kind
	off     int64    // byte offset of the value in the document
	keys    []string // object member names, in order
	keyOffs []int64  // byte offsets of the member names
	vals    []*node  // object member values (kindObject) or list elements (kindArray)
	str     string   // string value, or the number's text
	truth   bool
}

// syntaxError is where and why a document is not JSON (or too deep to read).
type syntaxError struct {
	path string // of the value being read
	off  int64  // where reading stopped
	err  error
}

func (e *syntaxError) Error() string { return strings.TrimPrefix(e.err.Error(), "json: ") }

// parseJSON parses one JSON value, with nothing but white space after it.
func parseJSON(js []byte) (*node, *syntaxError) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	n, err := parseValue(dec, js, 0, "")
	if err == nil {
		after := dec.InputOffset()
		if _, extra := dec.Token(); extra != io.EOF {
			err = &syntaxError{off: after, err: errTrailing}
		}
	}
	var se *syntaxError
	if !errors.As(err, &se) && err != nil {
		se = &syntaxError{off: dec.InputOffset(), err: err}
	}
	if se == nil {
		return n, nil
	}
	// Where encoding/json stops and what it says differ between Go releases (go1.27 stops before the separator
	// in front of a bad token, and reports an early end as a syntax error rather than io.EOF), so the offset is moved
	// to the offending token and an early end is recognised by position, not by json's error.
	se.off = tokenStart(js, se.off)
	if se.off >= int64(len(js)) && !errors.Is(se.err, errTooDeep) {
		se.err = errEnd
	}
	return nil, se
}

// errEnd is a document that ends inside a value.
var errEnd = errors.New("unexpected end of the document")

// describe says what is wrong at se, in kedge's words rather than encoding/json's: the token found where it does
// not belong, the early end of the document, or the depth limit.
func (se *syntaxError) describe(js []byte) string {
	switch {
	case errors.Is(se.err, errTooDeep) || errors.Is(se.err, errEnd) || se.off >= int64(len(js)):
		return se.err.Error()
	case errors.Is(se.err, errTrailing):
		return errTrailing.Error() + ": " + se.token(js)
	}
	return "unexpected token " + se.token(js)
}

// token returns the token at se (at most 20 bytes of it).
func (se *syntaxError) token(js []byte) string {
	off := se.off
	end := off + 1
	for end < int64(len(js)) && end-off < 20 && strings.IndexByte(" \t\r\n,:[]{}\"", js[end]) < 0 {
		end++
	}
	return string(js[off:min(end, int64(len(js)))])
}

// errTrailing is more than one value in a document.
var errTrailing = errors.New("unexpected data after the document")

// errTooDeep refuses documents nested deeper than maxDepth.
var errTooDeep = fmt.Errorf("nested deeper than %d levels", maxDepth)

func parseValue(dec *json.Decoder, js []byte, depth int, path string) (_ *node, err error) {
	off := tokenStart(js, dec.InputOffset())
	defer func() {
		var se *syntaxError
		if err != nil && !errors.As(err, &se) {
			err = &syntaxError{path: path, off: dec.InputOffset(), err: err}
		}
	}()
	if depth > maxDepth {
		return nil, errTooDeep
	}
	if tokenStart(js, dec.InputOffset()) >= int64(len(js)) {
		return nil, errEnd
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		n := &node{kind: kindArray, off: off}
		if v == '{' {
			n.kind = kindObject
		}
		for i := 0; ; i++ {
			// A document that ends inside a list or object is blamed on that list or object (json's More says
			// true at the end in go1.27, false in go1.26).
			if tokenStart(js, dec.InputOffset()) >= int64(len(js)) {
				return nil, errEnd
			}
			if !dec.More() {
				break
			}
			childPath := fmt.Sprintf("%s[%d]", path, i)
			if n.kind == kindObject {
				keyOff := tokenStart(js, dec.InputOffset())
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, _ := k.(string)
				n.keys = append(n.keys, key)
				n.keyOffs = append(n.keyOffs, keyOff)
				childPath = joinPath(path, key)
			}
			child, err := parseValue(dec, js, depth+1, childPath)
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
		return &node{kind: kindString, off: off, str: v}, nil
	case json.Number:
		return &node{kind: kindNumber, off: off, str: v.String()}, nil
	case bool:
		return &node{kind: kindBool, off: off, truth: v}, nil
	default:
		return &node{kind: kindNull, off: off}, nil
	}
}

// tokenStart returns where the token after offset off of js starts: past white space and the ',' or ':' that
// separate tokens.
func tokenStart(js []byte, off int64) int64 {
	for off < int64(len(js)) && strings.IndexByte(" \t\r\n,:", js[off]) >= 0 {
		off++
	}
	return off
}

// position converts a byte offset of js into a 1-based line and column; columns count characters.
func position(js []byte, off int64) (line, col int) {
	if off > int64(len(js)) {
		off = int64(len(js))
	}
	before := js[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return line, col
}

// schemaCheck compares a JSON tree with a message descriptor the way protojson reads it, collecting every problem
// in document order. It accepts everything protojson accepts; what it lets through that protojson refuses is left
// to protojson's error.
type schemaCheck struct {
	file  string
	first bool   // FirstProblem: its phrasing, and enum numbers the schema does not know are accepted
	js    []byte // with FirstProblem, the document as written in JSON, for line and column; nil otherwise
	errs  []error
}

// fail records a problem of the token at byte offset off.
func (s *schemaCheck) fail(path string, off int64, format string, args ...any) {
	s.failHint(path, off, fmt.Sprintf(format, args...), "")
}

// failHint is fail with a hint after the problem and its position: "unknown field "x" (line 1, column 2); the
// fields here are ...".
func (s *schemaCheck) failHint(path string, off int64, reason, hint string) {
	if s.js != nil {
		line, col := position(s.js, off)
		reason += fmt.Sprintf(" (line %d, column %d)", line, col)
	}
	if hint != "" {
		reason += "; " + hint
	}
	s.errs = append(s.errs, &FieldError{File: s.file, Field: path, Reason: reason})
}

// message checks an object against md.
func (s *schemaCheck) message(md protoreflect.MessageDescriptor, n *node, path string) {
	if md.FullName().Parent() == "google.protobuf" {
		return // well-known types have JSON forms of their own; protojson checks them
	}
	fields := md.Fields()
	seen := map[protoreflect.FieldNumber]string{}
	oneofs := map[protoreflect.FullName]string{}
	for i, key := range n.keys {
		val, keyOff := n.vals[i], n.keyOffs[i]
		p := joinPath(path, key)
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByTextName(key)
		}
		if fd == nil {
			s.failHint(p, keyOff, "unknown field "+strconv.Quote(key), "the fields here are "+fieldNames(md))
			continue
		}
		if prev, dup := seen[fd.Number()]; dup {
			switch {
			case s.first && prev == key:
				s.fail(p, keyOff, "duplicate field %s", strconv.Quote(key))
			case s.first:
				s.fail(p, keyOff, "duplicate field %s (also set as %s)", strconv.Quote(key), strconv.Quote(prev))
			default:
				s.fail(p, keyOff, "%s is set twice (also as %s)", fd.Name(), strconv.Quote(prev))
			}
			continue
		}
		seen[fd.Number()] = key
		if od := fd.ContainingOneof(); od != nil && val.kind != kindNull {
			if prev, set := oneofs[od.FullName()]; set {
				if s.first {
					s.fail(p, keyOff, "only one %s may be set (%s); %s is a second one", od.Name(), alternatives(od), strconv.Quote(key))
				} else {
					s.fail(p, keyOff, "only one of %s may be set; %s is set too", oneofNames(od), strconv.Quote(prev))
				}
				continue
			}
			oneofs[od.FullName()] = key
		}
		switch {
		case val.kind == kindNull:
		case fd.IsList():
			if val.kind != kindArray {
				s.fail(p, val.off, "must be a list, not %s", val.kind)
				continue
			}
			for j, el := range val.vals {
				s.value(fd, el, fmt.Sprintf("%s[%d]", p, j))
			}
		case fd.IsMap():
			if val.kind != kindObject {
				s.fail(p, val.off, "must be a map, not %s", val.kind)
				continue
			}
			for j, k := range val.keys {
				kp := joinPath(p, k)
				if why := checkMapKey(fd.MapKey().Kind(), k); why != "" {
					s.fail(kp, val.keyOffs[j], "invalid map key %s: %s", strconv.Quote(k), why)
					continue
				}
				s.value(fd.MapValue(), val.vals[j], kp)
			}
		default:
			s.value(fd, val, p)
		}
	}
}

// value checks one (non-list) value of field fd.
func (s *schemaCheck) value(fd protoreflect.FieldDescriptor, n *node, path string) {
	want := kindString
	switch k := fd.Kind(); k {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName().Parent() == "google.protobuf" {
			return // see message
		}
		if n.kind != kindObject {
			s.fail(path, n.off, "must be an object, not %s", n.kind)
			return
		}
		s.message(fd.Message(), n, path)
		return
	case protoreflect.EnumKind:
		s.enum(fd.Enum(), n, path)
		return
	case protoreflect.BoolKind:
		want = kindBool
	case protoreflect.StringKind:
		want = kindString
	case protoreflect.BytesKind:
		if n.kind == kindString && !isBase64(n.str) {
			s.fail(path, n.off, "invalid value %s for a field of type bytes: not base64", strconv.Quote(n.str))
			return
		}
	default: // numbers, which protojson also accepts as strings
		if n.kind != kindNumber && n.kind != kindString {
			s.fail(path, n.off, "must be a number, not %s", n.kind)
			return
		}
		if !numberFits(k, n) {
			shown := n.str
			if n.kind == kindString {
				shown = strconv.Quote(n.str)
			}
			s.fail(path, n.off, "invalid value %s for a field of type %s", shown, k)
		}
		return
	}
	if n.kind != want {
		s.fail(path, n.off, "must be %s, not %s", want, n.kind)
	}
}

// enum checks that n names a value of ed, by name or number (FirstProblem: any int32 number).
func (s *schemaCheck) enum(ed protoreflect.EnumDescriptor, n *node, path string) {
	switch n.kind {
	case kindString:
		if ed.Values().ByName(protoreflect.Name(n.str)) != nil {
			return
		}
	case kindNumber:
		if v, ok := integer(n.str, 32, false); ok && (s.first || ed.Values().ByNumber(protoreflect.EnumNumber(v.Int64())) != nil) {
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
	s.failHint(path, n.off, "unknown value "+shown, "one of "+strings.Join(names, ", "))
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
