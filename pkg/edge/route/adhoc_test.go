package route

import (
	"errors"
	"slices"
	"testing"
)

// originalAdhocRules follows the original adhoc_test.go, plus rules for IP literals and numeric-looking names.
var originalAdhocRules = []Adhoc{
	{NamePattern: "*.pods.cluster.local.with.replace", AllowedPorts: []uint32{80},
		Replace: &NameReplace{Pattern: "cluster.local.with.replace", Substitution: "cluster.replaced"}},
	{NamePattern: "*.failing.replace", AllowedPorts: []uint32{80}, Replace: &NameReplace{Pattern: "not-there", Substitution: "x"}},
	{NamePattern: "*.pods.cluster.local", AllowedPorts: []uint32{80, 8080},
		AllowedRanges: []PortRange{{From: 11000, To: 11200}}},
	{NamePattern: "*.default.port", DefaultPort: 8080, AllowedPorts: []uint32{8080}},
	{NamePattern: "*nonsecure.backends.test", AllowedRanges: []PortRange{{From: 1024, To: 65535}}},
	{NamePattern: "exact.Example.com", AllowedPorts: []uint32{443}},
	{NamePattern: "10.0.0.7", AllowedPorts: []uint32{80}},
	{NamePattern: "2001:DB8::7", AllowedPorts: []uint32{80}},
	{NamePattern: "127.1", AllowedPorts: []uint32{80}},
	{NamePattern: "*", AllowedPorts: []uint32{9999}},
}

func TestAdhoc(t *testing.T) {
	t.Parallel()
	h := mustHTTPTable(t, nil, originalAdhocRules)
	g := mustGRPCTable(t, nil, originalAdhocRules)
	tests := []struct {
		name     string
		hostport string
		want     Target
		wantErr  string // exact message; "" for success
		badReq   bool
	}{
		{"default port 80", "pod-0.namespace.pods.cluster.local", Target{Host: "pod-0.namespace.pods.cluster.local", Port: 80}, "", false},
		{"range lower bound", "pod-0.namespace.pods.cluster.local:11000", Target{Host: "pod-0.namespace.pods.cluster.local", Port: 11000}, "", false},
		{"range upper bound", "pod-0.namespace.pods.cluster.local:11200", Target{Host: "pod-0.namespace.pods.cluster.local", Port: 11200}, "", false},
		{"outside range", "pod-0.namespace.pods.cluster.local:11201", Target{}, "adhoc: port 11201 is not allowed", true},
		{"allowed list", "pod-0.namespace.pods.cluster.local:8080", Target{Host: "pod-0.namespace.pods.cluster.local", Port: 8080}, "", false},
		{"case and trailing dot", "Pod-0.Namespace.PODS.cluster.local.:8080", Target{Host: "pod-0.namespace.pods.cluster.local", Port: 8080}, "", false},
		{"first matching rule decides", "x.pods.cluster.local:9999", Target{}, "adhoc: port 9999 is not allowed", true},
		{"rule default port", "a.default.port", Target{Host: "a.default.port", Port: 8080}, "", false},
		{"suffix without dot matches the name itself", "nonsecure.backends.test:2000", Target{Host: "nonsecure.backends.test", Port: 2000}, "", false},
		{"replace", "pod-0.namespace.pods.cluster.local.with.replace", Target{Host: "pod-0.namespace.pods.cluster.replaced", Port: 80}, "", false},
		{"replace failure", "a.failing.replace", Target{}, `adhoc: replace pattern "not-there" does not match host "a.failing.replace": configuration error`, false},
		{"exact", "EXACT.example.com:443", Target{Host: "exact.example.com", Port: 443}, "", false},
		{"catch-all", "anything.org:9999", Target{Host: "anything.org", Port: 9999}, "", false},
		{"catch-all port", "anything.org:80", Target{}, "adhoc: port 80 is not allowed", true},
		{"ip literal named exactly", "10.0.0.7", Target{Host: "10.0.0.7", Port: 80}, "", false},
		{"ipv6 literal named exactly", "[2001:db8:0::7]:80", Target{Host: "2001:db8::7", Port: 80}, "", false},
		{"numeric name named exactly", "127.1", Target{Host: "127.1", Port: 80}, "", false},
		{"ip literal not named", "10.0.0.8:9999", Target{}, ErrNoRoute.Error(), false},
		{"loopback", "127.0.0.1:9999", Target{}, ErrNoRoute.Error(), false},
		{"numeric name", "2130706433:9999", Target{}, ErrNoRoute.Error(), false},
		{"hex name", "0x7f.1:9999", Target{}, ErrNoRoute.Error(), false},
		{"octal name", "0177.0.0.1:9999", Target{}, ErrNoRoute.Error(), false},
		{"localhost", "localhost:9999", Target{}, ErrNoRoute.Error(), false},
		{"localhost subdomain", "a.localhost.:9999", Target{}, ErrNoRoute.Error(), false},
		{"ipv6 loopback", "[::1]:9999", Target{}, ErrNoRoute.Error(), false},
		{"malformed port", "a.pods.cluster.local:abc", Target{}, `adhoc: malformed port number: "a.pods.cluster.local:abc"`, true},
		{"leading zero port", "a.pods.cluster.local:08080", Target{}, `adhoc: malformed port number: "a.pods.cluster.local:08080"`, true},
		{"invalid name", "a%2e.pods.cluster.local", Target{}, `adhoc: invalid host name "a%2e.pods.cluster.local": character '%' not allowed in a host name`, true},
		{"empty host", ":80", Target{}, "adhoc: empty host name", true},
		{"bare ipv6", "::1", Target{}, `adhoc: malformed host:port "::1"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for proto, adhoc := range map[string]func(string) (Target, error){"http": h.AdhocHostPort, "grpc": g.Adhoc} {
				got, err := adhoc(tt.hostport)
				if tt.wantErr == "" {
					if err != nil || !sameDest(got, tt.want) {
						t.Errorf("%s adhoc(%q) = %+v, %v; want %+v", proto, tt.hostport, got, err, tt.want)
					}
					continue
				}
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("%s adhoc(%q) = %+v, %v; want error %q", proto, tt.hostport, got, err, tt.wantErr)
					continue
				}
				var ae *AdhocError
				if errors.As(err, &ae) != (tt.wantErr != ErrNoRoute.Error()) || ae != nil && ae.BadRequest != tt.badReq {
					t.Errorf("%s adhoc(%q): error %#v, want BadRequest %v", proto, tt.hostport, err, tt.badReq)
				}
				if tt.wantErr == ErrNoRoute.Error() && !errors.Is(err, ErrNoRoute) {
					t.Errorf("%s adhoc(%q): error %v is not ErrNoRoute", proto, tt.hostport, err)
				}
			}
		})
	}
}

func TestAdhocSplitArguments(t *testing.T) {
	t.Parallel()
	h := mustHTTPTable(t, nil, originalAdhocRules)
	got, err := h.Adhoc("pod-1.ns.pods.cluster.local", 0, false)
	if err != nil || !sameDest(got, Target{Host: "pod-1.ns.pods.cluster.local", Port: 80}) {
		t.Errorf("Adhoc without port = %+v, %v", got, err)
	}
	got, err = h.Adhoc("pod-1.ns.pods.cluster.local", 11100, true)
	if err != nil || !sameDest(got, Target{Host: "pod-1.ns.pods.cluster.local", Port: 11100}) {
		t.Errorf("Adhoc with port = %+v, %v", got, err)
	}
	empty := mustHTTPTable(t, nil, nil)
	if _, err := empty.Adhoc("pod-1.ns.pods.cluster.local", 80, true); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Adhoc without rules: %v, want ErrNoRoute", err)
	}
	if rules := h.AdhocRules(); len(rules) != len(originalAdhocRules) || rules[5].NamePattern != "exact.example.com" ||
		rules[7].NamePattern != "2001:db8::7" {
		t.Errorf("AdhocRules() = %+v", rules)
	}
}

func TestAdhocReplaceToAddressRefused(t *testing.T) {
	t.Parallel()
	h := mustHTTPTable(t, nil, []Adhoc{{NamePattern: "*.x", AllowedPorts: []uint32{80},
		Replace: &NameReplace{Pattern: ".x", Substitution: ""}}})
	if got, err := h.AdhocHostPort("a.b.x"); err != nil || got.Host != "a.b" {
		t.Errorf("AdhocHostPort(a.b.x) = %+v, %v", got, err)
	}
	if got, err := h.AdhocHostPort("127.0.0.1.x"); err == nil {
		t.Errorf("AdhocHostPort(127.0.0.1.x) = %+v, want an error (rewritten to an address)", got)
	}
}

// sameDest compares the destination of two targets (not the requirement, which TestAdhocRequirement covers).
func sameDest(a, b Target) bool { return a.Host == b.Host && a.Port == b.Port }

func TestAdhocRequirement(t *testing.T) {
	t.Parallel()
	rules := []Adhoc{
		{NamePattern: "*.secure.test", AllowedPorts: []uint32{443}, RequiredPermissions: []string{"ops"},
			AllowedIdentities: []string{"robot.example.com"}},
		{NamePattern: "*.test", AllowedPorts: []uint32{443}},
	}
	h := mustHTTPTable(t, nil, rules)
	g := mustGRPCTable(t, nil, rules)
	rules[0].RequiredPermissions[0] = "changed" // the tables keep their own copies
	for proto, adhoc := range map[string]func(string) (Target, error){"http": h.AdhocHostPort, "grpc": g.Adhoc} {
		got, err := adhoc("a.secure.test:443")
		if err != nil || !slices.Equal(got.RequiredPermissions, []string{"ops"}) ||
			!slices.Equal(got.AllowedIdentities, []string{"robot.example.com"}) {
			t.Errorf("%s: secure target = %+v, %v; want the rule's requirement", proto, got, err)
		}
		got, err = adhoc("a.test:443")
		if err != nil || got.RequiredPermissions != nil || got.AllowedIdentities != nil {
			t.Errorf("%s: plain target = %+v, %v; want no requirement", proto, got, err)
		}
	}
	if src := h.AdhocRules(); !slices.Equal(src[0].RequiredPermissions, []string{"ops"}) ||
		!slices.Equal(src[0].AllowedIdentities, []string{"robot.example.com"}) {
		t.Errorf("AdhocRules() lost the requirement: %+v", src[0])
	}
}

func TestAdhocRequirementAllocs(t *testing.T) {
	// Carrying the requirement must not cost an allocation: the target shares the rule's slices.
	plain := mustHTTPTable(t, nil, []Adhoc{{NamePattern: "*.secure.test", AllowedPorts: []uint32{443}}})
	withReq := mustHTTPTable(t, nil, []Adhoc{{NamePattern: "*.secure.test", AllowedPorts: []uint32{443},
		RequiredPermissions: []string{"ops"}, AllowedIdentities: []string{"robot.example.com"}}})
	base := testing.AllocsPerRun(100, func() { _, _ = plain.Adhoc("a.secure.test", 443, true) })
	if n := testing.AllocsPerRun(100, func() { _, _ = withReq.Adhoc("a.secure.test", 443, true) }); n != base {
		t.Errorf("Adhoc with a requirement allocates %v times per call, without %v", n, base)
	}
}

// TestAdhocExplicit checks which targets count as written down by the operator: only an IP literal an exact rule
// names, not rewritten. Everything else is subject to the dial guard.
func TestAdhocExplicit(t *testing.T) {
	t.Parallel()
	rules := []Adhoc{
		{NamePattern: "10.0.0.9", AllowedPorts: []uint32{80},
			Replace: &NameReplace{Pattern: "10.0.0.9", Substitution: "ten.example"}},
		{NamePattern: "127.0.0.1", AllowedPorts: []uint32{80}},
		{NamePattern: "::1", AllowedPorts: []uint32{80}},
		{NamePattern: "localhost", AllowedPorts: []uint32{80}},
		{NamePattern: "127.1", AllowedPorts: []uint32{80}},
		{NamePattern: "*", AllowedPorts: []uint32{80}},
	}
	h := mustHTTPTable(t, nil, rules)
	g := mustGRPCTable(t, nil, rules)
	tests := []struct {
		hostport string
		want     Target
	}{
		{"127.0.0.1:80", Target{Host: "127.0.0.1", Port: 80, Explicit: true}},
		{"[::1]:80", Target{Host: "::1", Port: 80, Explicit: true}},
		{"[0:0::1]:80", Target{Host: "::1", Port: 80, Explicit: true}},
		{"10.0.0.9:80", Target{Host: "ten.example", Port: 80}},
		{"localhost:80", Target{Host: "localhost", Port: 80}},
		{"127.1:80", Target{Host: "127.1", Port: 80}},
		{"db.example.com:80", Target{Host: "db.example.com", Port: 80}},
	}
	for _, tt := range tests {
		for proto, adhoc := range map[string]func(string) (Target, error){"http": h.AdhocHostPort, "grpc": g.Adhoc} {
			got, err := adhoc(tt.hostport)
			if err != nil || !sameDest(got, tt.want) || got.Explicit != tt.want.Explicit {
				t.Errorf("%s adhoc(%q) = %+v, %v; want %+v", proto, tt.hostport, got, err, tt.want)
			}
		}
	}
	if got := (Target{Host: "::1", Port: 80}).HostPort(); got != "[::1]:80" {
		t.Errorf("HostPort() = %q, want [::1]:80", got)
	}
}
