package document

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// testSchema is a small document schema built in the test, so that this package needs no generated code:
//
//	message Doc  { repeated Item items = 1; string name = 2; Mode mode = 3; }
//	message Item { oneof target { string host = 1; string srv = 2; string k8s = 3; } uint32 port = 4; bool tls = 5; }
//	enum Mode    { ANY = 0; HTTP = 1; }
func testSchema(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(),
			Label: label.Enum(), JsonName: proto.String(name)}
	}
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING
	items := field("items", 1, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, descriptorpb.FieldDescriptorProto_LABEL_REPEATED)
	items.TypeName = proto.String(".doctest.Item")
	mode := field("mode", 3, descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt)
	mode.TypeName = proto.String(".doctest.Mode")
	inOneof := func(f *descriptorpb.FieldDescriptorProto) *descriptorpb.FieldDescriptorProto {
		f.OneofIndex = proto.Int32(0)
		return f
	}
	fd := &descriptorpb.FileDescriptorProto{
		Name: proto.String("doctest.proto"), Package: proto.String("doctest"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Doc"), Field: []*descriptorpb.FieldDescriptorProto{items, field("name", 2, str, opt), mode}},
			{
				Name: proto.String("Item"),
				Field: []*descriptorpb.FieldDescriptorProto{
					inOneof(field("host", 1, str, opt)), inOneof(field("srv", 2, str, opt)), inOneof(field("k8s", 3, str, opt)),
					field("port", 4, descriptorpb.FieldDescriptorProto_TYPE_UINT32, opt),
					field("tls", 5, descriptorpb.FieldDescriptorProto_TYPE_BOOL, opt),
				},
				OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("target")}},
			},
		},
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: proto.String("Mode"), Value: []*descriptorpb.EnumValueDescriptorProto{
			{Name: proto.String("ANY"), Number: proto.Int32(0)}, {Name: proto.String("HTTP"), Number: proto.Int32(1)},
		}}},
	}
	f, err := protodesc.NewFile(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.Messages().ByName("Doc")
}

// problem is an expected FieldError of doc.json: the exact field and a part of the reason.
type problem struct{ field, reason string }

func TestDecode(t *testing.T) {
	t.Parallel()
	md := testSchema(t)
	tests := []struct {
		name string
		doc  string
		mode Mode
		want []problem // in order; nil = decodes
	}{
		{name: "empty", doc: ""},
		{name: "YAML comments only", doc: "# nothing\n---\n"},
		{name: "byte-order mark", doc: "\xef\xbb\xbf{\"name\": \"a\"}"},
		{name: "YAML", doc: "name: a\nitems:\n- host: h\n  port: 80\n"},
		{name: "unknown enum number is kept for the caller", doc: `{"mode": 7}`},
		{name: "first problem, JSON, with line", doc: "{\"items\": [{\"host\": \"h\", \"bogus\": 1, \"tls\": 2}]}",
			want: []problem{{"items[0].bogus", `unknown field "bogus" (line 1, column 26); the fields here are host, srv, k8s, port, tls`}}},
		{name: "first problem, YAML, without line", doc: "items:\n- portt: 1\n",
			want: []problem{{"items[0].portt", `unknown field "portt"; the fields here are host, srv, k8s, port, tls`}}},
		{name: "second oneof member", doc: `{"items": [{"host": "h", "srv": "s"}]}`,
			want: []problem{{"items[0].srv", `only one target may be set (host, srv or k8s); "srv" is a second one`}}},
		{name: "wrong type", doc: `{"items": [{"port": "x"}]}`, want: []problem{{"items[0].port", `invalid value "x" for a field of type uint32 (line 1, column 21)`}}},
		{name: "number out of range", doc: `{"items": [{"port": 4294967296}]}`, want: []problem{{"items[0].port", "invalid value 4294967296 for a field of type uint32"}}},
		{name: "negative unsigned", doc: `{"items": [{"port": -1}]}`, want: []problem{{"items[0].port", "invalid value -1"}}},
		{name: "fraction", doc: `{"items": [{"port": 1.5}]}`, want: []problem{{"items[0].port", "invalid value 1.5"}}},
		{name: "numbers as protojson reads them", doc: `{"items": [{"port": "80"}, {"port": 1e2}, {"port": 4294967295}, {"port": 0}]}`},
		{name: "bool as a string", doc: `{"items": [{"tls": "yes"}]}`, want: []problem{{"items[0].tls", "must be true or false, not a string"}}},
		{name: "object where a list goes", doc: `{"items": {"host": "h"}}`, want: []problem{{"items", "must be a list, not an object (line 1, column 11)"}}},
		{name: "first in document order", doc: "{\"name\": \"a\",\n \"items\": [{\"port\": true}],\n \"zzz\": 1}",
			want: []problem{{"items[0].port", "must be a number, not true or false (line 2, column 21)"}}},
		{name: "column counts characters", doc: `{"name": "é", "x": 1}`, want: []problem{{"x", `unknown field "x" (line 1, column 15)`}}},
		{name: "unknown enum name", doc: `{"mode": "FTP"}`, want: []problem{{"mode", `unknown value "FTP" (line 1, column 10); one of ANY, HTTP`}}},
		{name: "field set twice", doc: `{"name": "a", "name": "b"}`, want: []problem{{"name", `duplicate field "name" (line 1, column 15)`}}},
		{name: "field set twice, all problems", doc: `{"name": "a", "name": "b"}`, mode: AllProblems, want: []problem{{"name", `name is set twice (also as "name")`}}},
		{name: "too deep, first problem", doc: strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40),
			want: []problem{{strings.TrimSuffix(strings.Repeat("a.", 33), "."), "nested deeper than 32 levels"}}},
		{name: "JSON syntax, first problem", doc: "{\"items\": [{\"host\": \"h\"},\n ]}", want: []problem{{"items[1]", "unexpected token ] (line 2, column 2)"}}},
		{name: "JSON syntax, bad literal", doc: `{"name": tru}`, want: []problem{{"name", "unexpected token tru (line 1, column 10)"}}},
		{name: "JSON cut short", doc: `{"items": [`, want: []problem{{"items", "unexpected end of the document"}}},
		{name: "all problems", doc: `{"name": 1, "items": [{"host": "h", "srv": "s", "tls": "yes"}], "mode": "FTP", "x": 1}`, mode: AllProblems,
			want: []problem{
				{"name", "must be a string, not a number"},
				{"items[0].srv", `only one of host, srv, k8s may be set; "host" is set too`},
				{"items[0].tls", "must be true or false, not a string"},
				{"mode", `unknown value "FTP"; one of ANY, HTTP`},
				{"x", `unknown field "x"; the fields here are items, name, mode`},
			}},
		{name: "all problems refuses unknown enum numbers", doc: `{"mode": 7}`, mode: AllProblems,
			want: []problem{{"mode", "unknown value 7; one of ANY, HTTP"}}},
		{name: "too deep", doc: strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), mode: AllProblems,
			want: []problem{{"", "nested deeper than 32 levels"}}},
		{name: "JSON syntax", doc: "{\"items\": [\n}", mode: AllProblems, want: []problem{{"", "invalid JSON at line 2, column 1"}}},
		{name: "YAML duplicate key", doc: "name: a\nname: b\n", want: []problem{{"", "invalid YAML"}}},
		{name: "YAML syntax", doc: "items: [\n", want: []problem{{"", "invalid YAML"}}},
		{name: "not a map", doc: "- a\n", want: []problem{{"", `the document must be a map of fields, like {"items": ...}`}}},
		{name: "invalid UTF-8", doc: "{\"name\":\n \"a\xff\"}", want: []problem{{"", "not valid UTF-8 at line 2, column 4"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Decode("doc.json", []byte(tt.doc), dynamicpb.NewMessage(md), tt.mode)
			fes := FieldErrors(err)
			ok := len(fes) == len(tt.want) && (err == nil) == (tt.want == nil)
			for i := 0; ok && i < len(fes); i++ {
				w := tt.want[i]
				ok = fes[i].File == "doc.json" && fes[i].Field == w.field && strings.Contains(fes[i].Reason, w.reason)
			}
			if !ok {
				t.Errorf("Decode error:\n%v\nwant (field, part of reason) %q", err, tt.want)
			}
		})
	}
}

// TestSyntaxErrorsWholeMessage pins whole messages for JSON that is not JSON: kedge words them and places them
// itself, so they read the same whatever encoding/json says (go1.26 and go1.27 word and place its errors
// differently).
func TestSyntaxErrorsWholeMessage(t *testing.T) {
	t.Parallel()
	md := testSchema(t)
	tests := []struct {
		doc  string
		mode Mode
		want string
	}{
		{`{"items": [`, FirstProblem, "doc.json: items: unexpected end of the document (line 1, column 12)"},
		{`{"items": [{"host": "h",`, FirstProblem, "doc.json: items[0]: unexpected end of the document (line 1, column 25)"},
		{`{"items": [{"host":`, FirstProblem, "doc.json: items[0].host: unexpected end of the document (line 1, column 20)"},
		{`{"name": tru}`, FirstProblem, "doc.json: name: unexpected token tru (line 1, column 10)"},
		{`{"name": "a",}`, FirstProblem, "doc.json: unexpected token } (line 1, column 14)"},
		{"{\"items\": [{\"host\": \"h\"},\n ]}", FirstProblem, "doc.json: items[1]: unexpected token ] (line 2, column 2)"},
		{`{"name": "\q"}`, FirstProblem, `doc.json: name: unexpected token "\q (line 1, column 10)`},
		{`{"name": 1e}`, FirstProblem, "doc.json: name: unexpected token 1e (line 1, column 10)"},
		{`{"name": "a"} {}`, FirstProblem, "doc.json: unexpected data after the document: { (line 1, column 15)"},
		{`{"items": [`, AllProblems, "doc.json: invalid JSON at line 1, column 12: unexpected end of the document"},
		{`{"name": tru}`, AllProblems, "doc.json: invalid JSON at line 1, column 10: unexpected token tru"},
		{`{name: 1}`, AllProblems, "doc.json: invalid JSON at line 1, column 2: unexpected token name"},
		{`{"name": "a"}}`, AllProblems, "doc.json: invalid JSON at line 1, column 14: unexpected data after the document: }"},
	}
	for _, tt := range tests {
		err := Decode("doc.json", []byte(tt.doc), dynamicpb.NewMessage(md), tt.mode)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Decode(%q, mode %d) = %v\nwant %s", tt.doc, tt.mode, err, tt.want)
		}
	}
}

func TestDecodeFillsMessage(t *testing.T) {
	t.Parallel()
	md := testSchema(t)
	fromYAML, fromJSON := dynamicpb.NewMessage(md), dynamicpb.NewMessage(md)
	if err := Decode("d", []byte("name: a\nmode: HTTP\nitems:\n- srv: s\n  tls: true\n"), fromYAML, AllProblems); err != nil {
		t.Fatal(err)
	}
	if err := Decode("d", []byte(`{"name": "a", "mode": 1, "items": [{"srv": "s", "tls": true}]}`), fromJSON, FirstProblem); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(fromYAML, fromJSON) {
		t.Errorf("YAML and JSON decode differently:\n%v\n%v", fromYAML, fromJSON)
	}
	if got := fromJSON.Get(md.Fields().ByName("name")).String(); got != "a" {
		t.Errorf("name = %q, want a", got)
	}
}

func TestRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "doc.yaml")
	if err := os.WriteFile(file, []byte("from: file"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, inline string
		wantData, wantName string
		wantReason         string // "" = no error
	}{
		{name: "file wins", path: file, inline: "from: inline", wantData: "from: file", wantName: file},
		{name: "inline", inline: "from: inline", wantData: "from: inline", wantName: "--flag"},
		{name: "neither", wantName: "--flag"},
		{name: "missing file", path: filepath.Join(dir, "gone"), wantName: filepath.Join(dir, "gone"),
			wantReason: "reading the file: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data, name, err := Read(tt.path, tt.inline, "--flag")
			if string(data) != tt.wantData || name != tt.wantName {
				t.Errorf("Read = %q, %q; want %q, %q", data, name, tt.wantData, tt.wantName)
			}
			fes := FieldErrors(err)
			if tt.wantReason == "" {
				if err != nil {
					t.Errorf("Read error: %v", err)
				}
				return
			}
			if len(fes) != 1 || fes[0].File != tt.wantName || fes[0].Field != "" || fes[0].Reason != tt.wantReason {
				t.Errorf("Read error = %v, want one FieldError for the file: %s", err, tt.wantReason)
			}
		})
	}
}

func TestFieldErrors(t *testing.T) {
	t.Parallel()
	a := &FieldError{File: "f", Field: "x", Reason: "bad"}
	b := &FieldError{File: "f", Reason: "unreadable"}
	c := &FieldError{File: "g", Field: "y[1]", Reason: "worse"}
	err := errors.Join(a, fmt.Errorf("wrapped: %w", errors.Join(b, errors.New("plain"))), nil, c)
	if got := FieldErrors(err); !slices.Equal(got, []*FieldError{a, b, c}) {
		t.Errorf("FieldErrors = %v, want a, b, c in order", got)
	}
	if got := FieldErrors(nil); got != nil {
		t.Errorf("FieldErrors(nil) = %v", got)
	}
	if got, want := a.Error(), "f: x: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := b.Error(), "f: unreadable"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
