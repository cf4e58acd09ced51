package pac

import (
	"strings"
	"testing"
)

// FuzzGenerate checks that no route pattern can break out of the generated PAC script: whatever the patterns, the
// script evaluates, and FindProxyForURL answers only DIRECT or winch's PROXY line.
func FuzzGenerate(f *testing.F) {
	for _, p := range []string{"*.internal.example.com", `"); alert(1); ("`, "</script>", "a\u2028b", "\\", "*"} {
		f.Add(p, "x.internal.example.com")
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		pac := Generate("127.0.0.1:8070", []string{pattern, "*.static.example.com"})
		e := newPACEngine(t, pac)
		switch got := e.eval(t, "https://"+host+"/", host); got {
		case "DIRECT", "PROXY 127.0.0.1:8070; DIRECT":
		default:
			t.Fatalf("pattern %q, host %q: FindProxyForURL = %q", pattern, host, got)
		}
		if strings.Count(string(pac), "function FindProxyForURL") != 1 {
			t.Fatalf("pattern %q changed the script's structure:\n%s", pattern, pac)
		}
	})
}
