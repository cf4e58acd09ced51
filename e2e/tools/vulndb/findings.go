package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// report is what check reads of govulncheck's JSON stream: its configuration (which database, how old, which Go)
// and its findings. A finding whose first trace frame names a function is a called vulnerability (what govulncheck's
// text mode fails on); one naming only a package or module is imported or required, not called.
type report struct {
	DBLastModified string
	GoVersion      string
	Called         map[string]string // OSV id -> "module@version, fixed in X"
	NotCalled      map[string]bool
}

type message struct {
	Config *struct {
		DB             string `json:"db"`
		DBLastModified string `json:"db_last_modified"`
		GoVersion      string `json:"go_version"`
		ScannerVersion string `json:"scanner_version"`
	} `json:"config"`
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module   string `json:"module"`
			Version  string `json:"version"`
			Package  string `json:"package"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

func readReport(r io.Reader) (report, error) {
	rep := report{Called: map[string]string{}, NotCalled: map[string]bool{}}
	dec := json.NewDecoder(r)
	sawConfig := false
	for {
		var m message
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, fmt.Errorf("reading the govulncheck report: %w", err)
		}
		if m.Config != nil {
			sawConfig = true
			rep.DBLastModified, rep.GoVersion = m.Config.DBLastModified, m.Config.GoVersion
		}
		f := m.Finding
		if f == nil || len(f.Trace) == 0 {
			continue
		}
		if f.Trace[0].Function == "" {
			rep.NotCalled[f.OSV] = true
			continue
		}
		fixed := f.FixedVersion
		if fixed == "" {
			fixed = "no fixed version"
		}
		rep.Called[f.OSV] = fmt.Sprintf("%s@%s, fixed in %s", f.Trace[0].Module, f.Trace[0].Version, fixed)
	}
	if !sawConfig {
		return rep, errors.New("the govulncheck report has no config message: not a -format json report")
	}
	for id := range rep.Called {
		delete(rep.NotCalled, id)
	}
	return rep, nil
}

// readKnown reads the accepted called vulnerabilities: one OSV id first on a line, the rest of the line (why it is
// accepted) and lines starting with # are for people.
func readKnown(path string) (map[string]bool, error) {
	known := map[string]bool{}
	if path == "" {
		return known, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		known[strings.Fields(line)[0]] = true
	}
	return known, sc.Err()
}

// check judges the report at path against the known list and returns the exit code: 0 clean, 1 a new called
// vulnerability or a stale known entry, 2 unreadable input.
func check(w io.Writer, path, knownPath string) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(w, "vulndb:", err)
		return 2
	}
	defer f.Close()
	rep, err := readReport(f)
	if err != nil {
		fmt.Fprintln(w, "vulndb:", err)
		return 2
	}
	known, err := readKnown(knownPath)
	if err != nil {
		fmt.Fprintln(w, "vulndb:", err)
		return 2
	}
	fmt.Fprintf(w, "govulncheck: database modified %s, %s; %d called vulnerabilities (%d accepted in %s), %d imported or required but not called\n",
		rep.DBLastModified, rep.GoVersion, len(rep.Called), len(known), knownPath, len(rep.NotCalled))
	code := 0
	for _, id := range sortedKeys(rep.Called) {
		if !known[id] {
			fmt.Fprintf(w, "NEW called vulnerability %s (%s): see https://pkg.go.dev/vuln/%s\n", id, rep.Called[id], id)
			code = 1
		}
	}
	for _, id := range sortedKeys(known) {
		if _, found := rep.Called[id]; !found {
			fmt.Fprintf(w, "%s is no longer called or no longer found: remove it from %s\n", id, knownPath)
			code = 1
		}
	}
	return code
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
