// Command vulndb builds a local Go vulnerability database, in the v1 file layout that `govulncheck -db file://DIR`
// reads, from the OSV records of a golang.org/x/vulndb module snapshot (its data/osv/<ID>.json files):
//
//	DIR/index/db.json       {"modified": <the snapshot's time>}
//	DIR/index/modules.json  [{"path": <module>, "vulns": [{"id", "modified", "fixed"}]}], sorted by path then id
//	DIR/index/vulns.json    [{"id", "modified", "aliases"}], sorted by id
//	DIR/ID/<ID>.json        each OSV record, byte for byte
//
// The module proxy serves the snapshot as a zip; the public database's own server is not needed. The records in the
// repository carry a zero "modified" time (the public database stamps it from git history), so the database's
// modified time is the snapshot's commit time, taken from its pseudo-version.
//
// Usage:
//
//	vulndb -src MODULE_DIR -version VERSION -out DIR     build the database (MODULE_DIR: go mod download's "Dir")
//	vulndb -findings REPORT.json -known KNOWN.txt        judge a `govulncheck -format json` report
//
// The output is written to DIR.tmp and renamed to DIR at the end, so a half-built database is never used. The check
// mode (findings.go) fails on every called vulnerability that KNOWN.txt does not list, and on every listed one that
// is no longer found, so the list cannot go stale.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

func main() {
	src := flag.String("src", "", "directory of the extracted golang.org/x/vulndb module (holds data/osv)")
	version := flag.String("version", "", "the module's pseudo-version, for the database's modified time")
	out := flag.String("out", "", "directory to write the database to (replaced if it exists)")
	findings := flag.String("findings", "", "a `govulncheck -format json` report to judge (check mode)")
	known := flag.String("known", "", "with -findings: the file of accepted called vulnerabilities")
	flag.Parse()
	if *findings != "" {
		os.Exit(check(os.Stdout, *findings, *known))
	}
	if *src == "" || *version == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "vulndb: -src, -version and -out are required")
		flag.Usage()
		os.Exit(2)
	}
	n, err := build(*src, *version, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
	fmt.Printf("vulndb: %d OSV records of golang.org/x/vulndb@%s written to %s\n", n, *version, *out)
}

// record is the part of an OSV record the indexes need.
type record struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced"`
		Fixed      string `json:"fixed"`
	} `json:"events"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vulnMeta struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

// pseudoTime matches the timestamp of a pseudo-version such as v0.0.0-20261105234957-e22db6528018.
var pseudoTime = regexp.MustCompile(`-(\d{14})-[0-9a-f]{12}$`)

func build(src, version, out string) (n int, err error) {
	m := pseudoTime.FindStringSubmatch(version)
	if m == nil {
		return 0, fmt.Errorf("version %q: not a pseudo-version with a timestamp", version)
	}
	snapshot, err := time.Parse("20060102150405", m[1])
	if err != nil {
		return 0, fmt.Errorf("version %q: %w", version, err)
	}
	osvDir := filepath.Join(src, "data", "osv")
	files, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("%s: no OSV records (*.json)", osvDir)
	}
	tmp := out + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.MkdirAll(filepath.Join(tmp, "ID"), 0o755); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "index"), 0o755); err != nil {
		return 0, err
	}

	modules := map[string]*moduleMeta{}
	var vulns []vulnMeta
	dbModified := snapshot
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
		if r.ID == "" || filepath.Base(f) != r.ID+".json" {
			return 0, fmt.Errorf("%s: file name does not match its id %q", f, r.ID)
		}
		if r.Modified.After(dbModified) {
			dbModified = r.Modified
		}
		for _, a := range r.Affected {
			path := a.Package.Name
			if path == "" {
				return 0, fmt.Errorf("%s: affected entry without package.name", f)
			}
			mm := modules[path]
			if mm == nil {
				mm = &moduleMeta{Path: path}
				modules[path] = mm
			}
			mm.Vulns = append(mm.Vulns, moduleVuln{ID: r.ID, Modified: r.Modified, Fixed: latestFix(a.Ranges)})
		}
		vulns = append(vulns, vulnMeta{ID: r.ID, Modified: r.Modified, Aliases: r.Aliases})
		if err := os.WriteFile(filepath.Join(tmp, "ID", r.ID+".json"), b, 0o644); err != nil {
			return 0, err
		}
	}

	paths := make([]string, 0, len(modules))
	for p := range modules {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	modList := make([]*moduleMeta, 0, len(paths))
	for _, p := range paths {
		mm := modules[p]
		sort.Slice(mm.Vulns, func(i, j int) bool { return mm.Vulns[i].ID < mm.Vulns[j].ID })
		modList = append(modList, mm)
	}
	sort.Slice(vulns, func(i, j int) bool { return vulns[i].ID < vulns[j].ID })

	for name, v := range map[string]any{
		"db.json": struct {
			Modified time.Time `json:"modified"`
		}{dbModified.UTC()},
		"modules.json": modList,
		"vulns.json":   vulns,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(tmp, "index", name), b, 0o644); err != nil {
			return 0, err
		}
	}
	if err := os.RemoveAll(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return 0, err
	}
	return len(files), nil
}

// latestFix is the highest "fixed" version of the SEMVER ranges, or "" when the vulnerability is introduced again
// after it (then no version is known to be fixed). govulncheck reads only the records whose fix is above the version
// in use, or that have no fix, so this must never be higher than the truth; it follows govulncheck's own rule.
func latestFix(ranges []osvRange) string {
	latest := ""
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && less(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && less(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// less compares OSV versions, which have no "v" (or have Go's "go" prefix for the toolchain).
func less(a, b string) bool {
	return semver.Compare(canonical(a), canonical(b)) < 0
}

func canonical(v string) string {
	v = strings.TrimPrefix(strings.TrimPrefix(v, "v"), "go")
	return "v" + v
}
