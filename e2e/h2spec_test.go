package e2e

import (
	"bufio"
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// h2specDir is the module that pins h2spec (see its go.mod); knownFailures lists the cases kedge is allowed to fail.
const (
	h2specDir           = "tools/h2spec"
	h2specKnownFailures = "tools/h2spec/known-failures.txt"
)

// TestH2spec runs the pinned h2spec against the real kedge binary's HTTPS port and fails on any failing case that
// is not in the committed list of known failures, and on any listed case that passes now (take it off the list).
func TestH2spec(t *testing.T) {
	bin := buildH2spec(t)
	b := startBackends(t)
	director := `{"http": {"routes": [{"backend_name": "plain", "host_matcher": "127.0.0.1"}]}}`
	e := startKedge(t, director, b.pool())

	report := filepath.Join(t.TempDir(), "h2spec.xml")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// -o: seconds h2spec waits for each expected frame; generous for a -race kedge on 2 busy cores.
	cmd := exec.CommandContext(ctx, bin, "-t", "-k", "-h", "127.0.0.1", "-p", itoa(e.httpsPort), "-o", "5", "-j", report)
	out, err := cmd.CombinedOutput() // exits 1 when any case fails; the report says which
	if ctx.Err() != nil {
		t.Fatalf("h2spec did not finish within 3 minutes:\n%s", out)
	}
	failed, summary, perr := readH2specReport(report)
	if perr != nil {
		t.Fatalf("h2spec (%v) left no readable report: %v\n%s", err, perr, out)
	}
	t.Logf("h2spec: %s", summary)
	known := readKnownFailures(t)
	for _, id := range failed {
		if !known[id] {
			t.Errorf("new h2spec failure: %s", id)
		}
		delete(known, id)
	}
	for id := range known {
		t.Errorf("h2spec case passes now; remove it from %s: %s", h2specKnownFailures, id)
	}
	if t.Failed() {
		t.Logf("h2spec output:\n%s", out)
	}
}

// buildH2spec builds the pinned h2spec into a temp dir (Go's build cache makes repeated builds quick). Without the
// module in the cache and without a reachable module proxy the test is skipped, except under CI, where it fails.
func buildH2spec(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "h2spec")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/summerwind/h2spec/cmd/h2spec")
	cmd.Dir = h2specDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return bin
	}
	offline := regexp.MustCompile(`dial tcp|no such host|connection refused|i/o timeout|GOPROXY=off|proxy.golang.org`)
	if os.Getenv("CI") == "" && offline.Match(out) {
		t.Skipf("h2spec cannot be built: its module is not in the module cache and the module proxy is unreachable "+
			"(run `go mod download` in e2e/%s with network access once): %v\n%s", h2specDir, err, out)
	}
	t.Fatalf("building h2spec in e2e/%s: %v\n%s", h2specDir, err, out)
	return ""
}

// h2specReport is the part of h2spec's JUnit report the test reads.
type h2specReport struct {
	Suites []struct {
		Cases []struct {
			Package   string    `xml:"package,attr"`
			ClassName string    `xml:"classname,attr"`
			Failure   *struct{} `xml:"failure"`
			Error     *struct{} `xml:"error"`
			Skipped   *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// readH2specReport returns the failing cases as "section: description" (e.g. "http2/6.5.3: Sends multiple values
// of SETTINGS_INITIAL_WINDOW_SIZE"), sorted, and a summary line.
func readH2specReport(path string) (failed []string, summary string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var r h2specReport
	if err := xml.Unmarshal(b, &r); err != nil {
		return nil, "", err
	}
	total, skipped := 0, 0
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			if c.Package == "" && c.ClassName == "" {
				continue // h2spec pads its report with empty elements
			}
			total++
			switch {
			case c.Skipped != nil:
				skipped++
			case c.Failure != nil || c.Error != nil:
				failed = append(failed, c.Package+": "+c.ClassName)
			}
		}
	}
	if total == 0 {
		return nil, "", fmt.Errorf("no test cases in %s", path)
	}
	sort.Strings(failed)
	return failed, fmt.Sprintf("%d tests, %d passed, %d skipped, %d failed", total, total-skipped-len(failed), skipped, len(failed)), nil
}

// readKnownFailures reads the committed list: one "section: description" per line, # comments and blank lines
// ignored.
func readKnownFailures(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(h2specKnownFailures)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	known := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			known[line] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return known
}
