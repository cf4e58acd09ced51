package e2e

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDocsConfigBlocks checks every kedge and winch config document the docs show, with the real binaries'
// --check-config: each ```yaml block of docs/*.md and every file of docs/examples/.
//
// What a block is comes from its top-level keys: http:/grpc: with routes or adhoc_rules is a kedge director, with
// backends a kedge backendpool; routes: is a winch mapper, auth_sources: a winch auth document. Other blocks
// (Kubernetes manifests, deployment snippets) are not config documents and are left alone.
//
// Blocks that belong together load together:
//   - a director loads with the backendpool block of the same file (the next one after it, else the one before);
//     without one, with a backendpool defining exactly the backends the director names (so a route naming a
//     backend the docs never define still fails: kedge sees the kind of backend the route needs);
//   - a backendpool without a director in its file loads with a director routing one name to each backend;
//   - a winch mapper loads with the auth block of its own file, else with docs/winch.md's;
//   - in docs/examples/, X-director.yaml goes with X-backendpool.yaml and X-mapper.yaml with X-auth.yaml (X may be
//     empty: director.yaml, winch-mapper.yaml); a file that fits no pair fails the test. A director whose comment
//     has a line "# kedge flags:" followed by "#   --flag=value" lines is checked with those flags, and then must
//     load without any warning (the flags are what makes it work: authentication, discovery).
//
// The one marker: a line `<!-- docs-check: skip (why) -->` right before a fence skips a block that is a sketch, not
// a document (a schema outline with "[HTTPRoute...]").
func TestDocsConfigBlocks(t *testing.T) {
	mds, _ := filepath.Glob("../docs/*.md")
	var blocks []docBlock
	for _, md := range mds {
		blocks = append(blocks, yamlBlocks(t, md)...)
	}
	byFile := map[string][]docBlock{}
	for _, b := range blocks {
		byFile[b.file] = append(byFile[b.file], b)
	}
	checked := 0
	for _, b := range blocks {
		switch b.kind {
		case kindDirector:
			pool, ok := partner(byFile[b.file], b, kindBackendpool)
			if !ok {
				pool = stubBackendpool(b.text)
			}
			checkKedge(t, b.name, b.text, pool.text)
		case kindBackendpool:
			if _, ok := partner(byFile[b.file], b, kindDirector); ok {
				continue // checked with its director
			}
			checkKedge(t, b.name, stubDirector(b.text), b.text)
		case kindMapper:
			auth, ok := partner(byFile[b.file], b, kindAuth)
			if !ok {
				auth, ok = partner(byFile["../docs/winch.md"], b, kindAuth)
			}
			if !ok {
				t.Fatalf("%s: no winch auth block to load the mapper with", b.name)
			}
			checkWinch(t, b.name, b.text, auth.text)
		default:
			continue
		}
		checked++
	}
	if checked < 6 {
		t.Errorf("checked only %d config blocks in docs/*.md; the block finder is broken", checked)
	}

	examples, _ := filepath.Glob("../docs/examples/*.yaml")
	used := map[string]bool{}
	for _, pair := range [][2]string{{"director.yaml", "backendpool.yaml"}, {"mapper.yaml", "auth.yaml"}} {
		for _, f := range examples {
			prefix, ok := strings.CutSuffix(filepath.Base(f), pair[0])
			if !ok {
				continue
			}
			other := filepath.Join(filepath.Dir(f), prefix+pair[1])
			if !slices.Contains(examples, other) {
				t.Errorf("%s has no %s to load with", f, other)
				continue
			}
			used[f], used[other] = true, true
			if pair[0] == "director.yaml" {
				checkKedge(t, f, readText(t, f), readText(t, other), exampleFlags(readText(t, f))...)
			} else {
				checkWinch(t, f, readText(t, f), readText(t, other))
			}
		}
	}
	for _, f := range examples {
		if !used[f] {
			t.Errorf("%s is not checked: name it X-director.yaml/X-backendpool.yaml or X-mapper.yaml/X-auth.yaml", f)
		}
	}
}

type docKind int

const (
	kindOther docKind = iota
	kindDirector
	kindBackendpool
	kindMapper
	kindAuth
)

type docBlock struct {
	file, name string // name: file:line, for messages
	text       string
	kind       docKind
	index      int // position among the file's blocks
}

var fenceRE = regexp.MustCompile("(?m)^```yaml\n((?s:.*?))^```")

func yamlBlocks(t *testing.T, md string) []docBlock {
	src := readText(t, md)
	var out []docBlock
	for _, m := range fenceRE.FindAllStringSubmatchIndex(src, -1) {
		before := strings.TrimRight(src[:m[0]], "\n")
		if strings.HasPrefix(before[strings.LastIndex(before, "\n")+1:], "<!-- docs-check: skip") {
			continue
		}
		text := src[m[2]:m[3]]
		line := strings.Count(src[:m[0]], "\n") + 1
		out = append(out, docBlock{file: md, name: fmt.Sprintf("%s:%d", strings.TrimPrefix(md, "../"), line),
			text: text, kind: classify(text), index: len(out)})
	}
	return out
}

// classify tells a block's kind from its top-level keys and what lies under them.
func classify(text string) docKind {
	top := regexp.MustCompile(`(?m)^([a-z_]+):`).FindAllStringSubmatch(text, -1)
	keys := map[string]bool{}
	for _, k := range top {
		keys[k[1]] = true
	}
	switch {
	case keys["auth_sources"]:
		return kindAuth
	case keys["routes"]:
		return kindMapper
	case (keys["http"] || keys["grpc"]) && regexp.MustCompile(`(?m)^\s+backends:`).MatchString(text):
		return kindBackendpool
	case (keys["http"] || keys["grpc"]) && regexp.MustCompile(`(?m)^\s+(routes|adhoc_rules):`).MatchString(text):
		return kindDirector
	}
	return kindOther
}

// partner finds the block of kind want that goes with b in its file: the next one after b, else the last before.
func partner(blocks []docBlock, b docBlock, want docKind) (docBlock, bool) {
	var before *docBlock
	for i := range blocks {
		if blocks[i].kind != want {
			continue
		}
		if blocks[i].index > b.index || blocks[i].file != b.file {
			return blocks[i], true
		}
		before = &blocks[i]
	}
	if before != nil {
		return *before, true
	}
	return docBlock{}, false
}

var backendNameRE = regexp.MustCompile(`backend_name:\s*"?([A-Za-z0-9_.-]+)"?`)

// stubBackendpool defines each backend a director names, under the protocol section where the director names it.
func stubBackendpool(director string) docBlock {
	var pool strings.Builder
	for _, section := range []string{"http", "grpc"} {
		names := map[string]bool{}
		for _, m := range backendNameRE.FindAllStringSubmatch(topSection(director, section), -1) {
			names[m[1]] = true
		}
		if len(names) == 0 {
			continue
		}
		fmt.Fprintf(&pool, "%s:\n  backends:\n", section)
		for _, n := range slices.Sorted(func(yield func(string) bool) {
			for n := range names {
				if !yield(n) {
					return
				}
			}
		}) {
			fmt.Fprintf(&pool, "    - name: %s\n      host: {dns_name: 127.0.0.1, port: 1}\n", n)
		}
	}
	return docBlock{text: pool.String()}
}

var backendDefRE = regexp.MustCompile(`(?m)^\s+- name:\s*"?([A-Za-z0-9_.-]+)"?`)

// stubDirector routes one made-up name to each backend of a backendpool.
func stubDirector(pool string) string {
	var dir strings.Builder
	for _, section := range []string{"http", "grpc"} {
		defs := backendDefRE.FindAllStringSubmatch(topSection(pool, section), -1)
		if len(defs) == 0 {
			continue
		}
		fmt.Fprintf(&dir, "%s:\n  routes:\n", section)
		for i, m := range defs {
			if section == "http" {
				fmt.Fprintf(&dir, "    - {backend_name: %s, host_matcher: b%d.docs.invalid}\n", m[1], i)
			} else {
				fmt.Fprintf(&dir, "    - {backend_name: %s, service_name_matcher: \"docs%d.*\"}\n", m[1], i)
			}
		}
	}
	return dir.String()
}

// topSection is the text of top-level key name (its indented lines), or "".
func topSection(doc, name string) string {
	_, rest, ok := strings.Cut("\n"+doc, "\n"+name+":")
	if !ok {
		return ""
	}
	if i := regexp.MustCompile(`\n[a-z_]+:`).FindStringIndex(rest); i != nil {
		rest = rest[:i[0]]
	}
	return rest
}

// checkKedge runs kedge --check-config on a director and a backendpool; with flags, a warning is a failure too.
func checkKedge(t *testing.T, name, director, pool string, flags ...string) {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command(filepath.Join(binDir, "kedge"), append([]string{"--check-config",
		"--kedge_config_director_config_path=" + writeFile(t, dir, "director.yaml", director),
		"--kedge_config_backendpool_config_path=" + writeFile(t, dir, "backendpool.yaml", pool)}, flags...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config is valid") || (len(flags) > 0 && strings.Contains(string(out), "warning:")) {
		t.Errorf("%s: kedge --check-config %q: %v\n%s\n-- director --\n%s-- backendpool --\n%s", name, flags, err, out, director, pool)
	}
}

// exampleFlags reads the "# kedge flags:" lines of an example director.
func exampleFlags(director string) []string {
	_, rest, ok := strings.Cut(director, "# kedge flags:\n")
	if !ok {
		return nil
	}
	var flags []string
	for _, line := range strings.Split(rest, "\n") {
		f, ok := strings.CutPrefix(line, "#   --")
		if !ok {
			break
		}
		flags = append(flags, "--"+strings.TrimSpace(f))
	}
	return flags
}

func checkWinch(t *testing.T, name, mapper, auth string) {
	t.Helper()
	dir := t.TempDir()
	out, stderr, code := winchRun(t, "--check-config",
		"--server_mapper_config_path="+writeFile(t, dir, "mapper.yaml", mapper),
		"--server_auth_config_path="+writeFile(t, dir, "auth.yaml", auth))
	if code != 0 || !strings.Contains(out, "config is valid") {
		t.Errorf("%s: winch --check-config: exit %d\n%s%s\n-- mapper --\n%s-- auth --\n%s", name, code, out, stderr, mapper, auth)
	}
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWinchUserUnits checks docs/winch's systemd and launchd units: the plist is well-formed XML, and each unit's
// winch arguments, with its home directory made a temp dir holding the example documents, pass winch --check-config.
func TestWinchUserUnits(t *testing.T) {
	unit := readText(t, "../docs/winch/winch.service")
	execStart := regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`).FindStringSubmatch(unit)
	if execStart == nil || !strings.HasSuffix(execStart[1], "/winch") {
		t.Fatalf("winch.service has no ExecStart running winch")
	}
	plist := readText(t, "../docs/winch/dev.kedge.winch.plist")
	dec := xml.NewDecoder(strings.NewReader(plist))
	var plistArgs []string
	inArgs := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("dev.kedge.winch.plist is not well-formed XML: %v", err)
		}
		switch v := tok.(type) {
		case xml.CharData:
			if s := strings.TrimSpace(string(v)); s == "ProgramArguments" {
				inArgs = true
			} else if inArgs && strings.HasPrefix(s, "--") {
				plistArgs = append(plistArgs, s)
			}
		case xml.EndElement:
			if v.Name.Local == "array" {
				inArgs = false
			}
		}
	}
	for name, args := range map[string]struct{ home, args string }{
		"winch.service":         {"%h", execStart[2]},
		"dev.kedge.winch.plist": {"/Users/YOU", strings.Join(plistArgs, " ")},
	} {
		home := t.TempDir()
		if err := os.MkdirAll(filepath.Join(home, ".config", "winch"), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(home, ".config", "winch"), "mapper.yaml", readText(t, "../docs/examples/winch-mapper.yaml"))
		writeFile(t, filepath.Join(home, ".config", "winch"), "auth.yaml", readText(t, "../docs/examples/winch-auth.yaml"))
		argv := strings.Fields(strings.ReplaceAll(args.args, args.home, home))
		if len(argv) < 2 {
			t.Errorf("%s: found only %q as winch's arguments", name, argv)
			continue
		}
		out, stderr, code := winchRun(t, append([]string{"--check-config"}, argv...)...)
		if code != 0 || !strings.Contains(out, "config is valid") {
			t.Errorf("%s: winch --check-config %q: exit %d\n%s%s", name, argv, code, out, stderr)
		}
	}
}
