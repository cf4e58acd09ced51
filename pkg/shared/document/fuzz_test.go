package document

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// FuzzDecode checks Decode's own schema check against protojson, which does the decoding: a JSON document protojson
// accepts is accepted (and decoded the same), and one it refuses is refused with a FieldError that names the field,
// never with protojson's own message.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"name": "a", "mode": "HTTP", "items": [{"host": "h", "port": 80, "tls": true}]}`,
		`{"items": [{"host": "h", "srv": "s"}]}`,
		`{"items": [{"port": "80"}, {"port": 1e2}, {"port": 1.0}, {"port": -0}, {"port": "4294967295"}]}`,
		`{"items": [{"port": 1E+2}, {"port": 100e-2}, {"port": 0.5e1}, {"port": " 1"}]}`,
		`{"mode": 7, "name": null, "items": [null]}`,
		`{"mode": 1.0, "Name": "a", "items": {}}`,
		`{"name": "a", "name": "b"}`,
		"{\"items\": [{\"host\": \"h\"},\n ]}",
		"name: a\nitems:\n- port: x\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	md := testSchema(f)
	f.Fuzz(func(t *testing.T, doc string) {
		for _, mode := range []Mode{FirstProblem, AllProblems} {
			if err := Decode("doc.json", []byte(doc), dynamicpb.NewMessage(md), mode); err != nil && len(FieldErrors(err)) == 0 {
				t.Fatalf("mode %d error without a FieldError: %v", mode, err)
			}
		}
		if !strings.HasPrefix(strings.TrimSpace(doc), "{") || strings.Count(doc, "{")+strings.Count(doc, "[") > maxDepth || !json.Valid([]byte(doc)) {
			// YAML, deeper than Decode reads, or not JSON at all (protojson lets some of that through, like "10e").
			return
		}
		want := dynamicpb.NewMessage(md)
		wantErr := protojson.Unmarshal([]byte(doc), want)
		for _, mode := range []Mode{FirstProblem, AllProblems} {
			got := dynamicpb.NewMessage(md)
			err := Decode("doc.json", []byte(doc), got, mode)
			switch {
			case err == nil && wantErr != nil:
				t.Fatalf("mode %d accepted what protojson refuses (%v):\n%s", mode, wantErr, doc)
			case err == nil && !proto.Equal(got, want):
				t.Fatalf("mode %d decoded differently from protojson:\n%s", mode, doc)
			case err != nil && wantErr == nil && !(mode == AllProblems && strings.Contains(err.Error(), "unknown value")):
				// AllProblems alone refuses enum numbers the schema does not know.
				t.Fatalf("mode %d refused what protojson accepts: %v\n%s", mode, err, doc)
			case err != nil:
				fes := FieldErrors(err)
				if len(fes) == 0 || strings.Contains(err.Error(), "cannot decode the document") {
					t.Fatalf("mode %d error is not Decode's own: %v\n%s", mode, err, doc)
				}
			}
		}
	})
}
