package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeOSV writes an OSV record under dir/data/osv the way the golang.org/x/vulndb module carries it.
func writeOSV(t *testing.T, dir, id, body string) {
	t.Helper()
	osv := filepath.Join(dir, "data", "osv")
	if err := os.MkdirAll(osv, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(osv, id+".json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestBuild(t *testing.T) {
	src, out := t.TempDir(), filepath.Join(t.TempDir(), "db")
	stdlib := `{"id": "GO-2026-0002", "modified": "0001-01-01T00:00:00Z", "aliases": ["CVE-2026-2"], "affected": [
  {"package": {"name": "stdlib"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.26.9"}, {"introduced": "1.27.0-0"}, {"fixed": "1.27.2"}]}]},
  {"package": {"name": "golang.org/x/net"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.60.0"}]}]}]}`
	reintroduced := `{"id": "GO-2026-0001", "modified": "0001-01-01T00:00:00Z", "affected": [
  {"package": {"name": "golang.org/x/net"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.10.0"}, {"introduced": "0.12.0"}]}]}]}`
	writeOSV(t, src, "GO-2026-0002", stdlib)
	writeOSV(t, src, "GO-2026-0001", reintroduced)
	// A stale half-built output of an earlier run is replaced, not merged.
	if err := os.MkdirAll(filepath.Join(out+".tmp", "ID"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeOSV(t, out+".tmp", "junk", "{}")

	n, err := build(src, "v0.0.0-20261105234957-e22db6528018", out)
	if err != nil || n != 2 {
		t.Fatalf("build: %d records, %v; want 2, nil", n, err)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp is left behind (%v)", out, err)
	}
	if _, err := os.Stat(filepath.Join(out, "data")); !os.IsNotExist(err) {
		t.Errorf("the stale temp directory's content reached the database (%v)", err)
	}

	var db struct{ Modified time.Time }
	readJSON(t, filepath.Join(out, "index", "db.json"), &db)
	if want := time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC); !db.Modified.Equal(want) {
		t.Errorf("db.json modified %v, want the snapshot's time %v", db.Modified, want)
	}
	var modules []moduleMeta
	readJSON(t, filepath.Join(out, "index", "modules.json"), &modules)
	got := []string{}
	for _, m := range modules {
		for _, v := range m.Vulns {
			got = append(got, m.Path+" "+v.ID+" fixed="+v.Fixed)
		}
	}
	want := []string{
		"golang.org/x/net GO-2026-0001 fixed=", // reintroduced after its fix: no version is known to be fixed
		"golang.org/x/net GO-2026-0002 fixed=0.60.0",
		"stdlib GO-2026-0002 fixed=1.27.2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("modules.json:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var vulns []vulnMeta
	readJSON(t, filepath.Join(out, "index", "vulns.json"), &vulns)
	if len(vulns) != 2 || vulns[0].ID != "GO-2026-0001" || vulns[1].ID != "GO-2026-0002" || vulns[1].Aliases[0] != "CVE-2026-2" {
		t.Errorf("vulns.json = %+v", vulns)
	}
	b, err := os.ReadFile(filepath.Join(out, "ID", "GO-2026-0002.json"))
	if err != nil || string(b) != stdlib {
		t.Errorf("ID/GO-2026-0002.json is not the record byte for byte (%v)", err)
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name, version, id, body, want string
	}{
		{"not a pseudo-version", "v1.0.0", "GO-2026-0001", `{"id": "GO-2026-0001"}`, "not a pseudo-version"},
		{"file name differs from id", "v0.0.0-20261105234957-e22db6528018", "GO-2026-0001", `{"id": "GO-2026-0009"}`, "does not match"},
		{"not JSON", "v0.0.0-20261105234957-e22db6528018", "GO-2026-0001", `{`, "GO-2026-0001.json"},
		{"no package name", "v0.0.0-20261105234957-e22db6528018", "GO-2026-0001", `{"id": "GO-2026-0001", "affected": [{}]}`, "package.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, out := t.TempDir(), filepath.Join(t.TempDir(), "db")
			writeOSV(t, src, tt.id, tt.body)
			if _, err := build(src, tt.version, out); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("build: %v, want an error containing %q", err, tt.want)
			}
			for _, p := range []string{out, out + ".tmp"} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("a failed build left %s (%v)", p, err)
				}
			}
		})
	}
	if _, err := build(t.TempDir(), "v0.0.0-20261105234957-e22db6528018", filepath.Join(t.TempDir(), "db")); err == nil {
		t.Error("build of a module without data/osv succeeded")
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "report.json")
	// A -format json stream as govulncheck v1.9.0 writes it: config, then findings (one called, one imported only).
	if err := os.WriteFile(report, []byte(`{"config": {"db_last_modified": "2026-11-05T23:49:57Z", "go_version": "go1.26.8"}}
{"finding": {"osv": "GO-2026-0001", "fixed_version": "v1.26.9", "trace": [{"module": "stdlib", "version": "v1.26.8"}]}}
{"finding": {"osv": "GO-2026-0001", "fixed_version": "v1.26.9", "trace": [{"module": "stdlib", "version": "v1.26.8", "package": "net/http", "function": "Serve"}]}}
{"finding": {"osv": "GO-2026-0002", "trace": [{"module": "stdlib", "version": "v1.26.8", "package": "os"}]}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, known string
		code        int
		want        string
	}{
		{"a new called vulnerability", "", 1, "NEW called vulnerability GO-2026-0001 (stdlib@v1.26.8, fixed in v1.26.9)"},
		{"accepted", "# why\nGO-2026-0001  stdlib go1.26.8\n", 0, "1 called vulnerabilities (1 accepted"},
		{"a stale entry", "GO-2026-0001\nGO-2026-0003 fixed meanwhile\n", 1, "GO-2026-0003 is no longer called"},
		{"imported only is not called", "GO-2026-0001\nGO-2026-0002\n", 1, "GO-2026-0002 is no longer called"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			known := filepath.Join(t.TempDir(), "known.txt")
			if err := os.WriteFile(known, []byte(tt.known), 0o644); err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			if code := check(&out, report, known); code != tt.code || !strings.Contains(out.String(), tt.want) {
				t.Errorf("check = %d, want %d; output:\n%s\nwant it to contain %q", code, tt.code, out.String(), tt.want)
			}
		})
	}
	var out strings.Builder
	if code := check(&out, filepath.Join(dir, "missing.json"), ""); code != 2 {
		t.Errorf("check of a missing report = %d, want 2", code)
	}
	if err := os.WriteFile(report, []byte(`{"finding": {}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := check(&out, report, ""); code != 2 {
		t.Errorf("check of a report without config = %d, want 2", code)
	}
}
