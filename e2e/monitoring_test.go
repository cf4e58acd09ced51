package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"sigs.k8s.io/yaml"
)

// TestMonitoringMetricNames checks that docs/grafana/kedge.json and docs/alerts.yaml query only metrics kedge
// exports: it runs kedge, sends the traffic that makes each labelled series appear (a routed request, an unrouted
// one, a gRPC call, a CONNECT, a backend that refuses connections), scrapes /metrics and looks up every kedge_*
// name of every query (a histogram's _bucket, _sum and _count count as the histogram).
func TestMonitoringMetricNames(t *testing.T) {
	b := startBackends(t)
	deadPort := freePorts(t, 1)[0] // nothing listens: dial failures, ejections
	pool := strings.Replace(b.pool(), `"http": {"backends": [`,
		`"http": {"backends": [{"name": "dead", "host": {"dns_name": "127.0.0.1", "port": `+itoa(deadPort)+`}},`, 1)
	director := strings.Replace(basicDirector, `"http": {"routes": [`,
		`"http": {"routes": [{"backend_name": "dead", "host_matcher": "dead.example.com"},`, 1)
	k := startKedge(t, director, pool)

	if out, err := k.curl(t, []string{"plain.example.com"}, "https://plain.example.com/"); err != nil {
		t.Fatalf("routed request: %v\n%s", err, out)
	}
	for range 5 { // refused connections: 502s, dial failures, an ejection
		_, _ = k.curl(t, []string{"dead.example.com"}, "https://dead.example.com/")
	}
	_, _ = k.curl(t, []string{"a.wild.example.com"}, "https://a.wild.example.com/unrouted")
	_, _ = k.curl(t, []string{"plain.example.com"}, "-p", "-x", "https://localhost:"+itoa(k.httpsPort), "--proxy-cacert", k.caFile, "http://nowhere.example.com:80/")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := testpb.NewTestServiceClient(k.grpcConn(t, k.grpcAddr, "")).UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1}); err != nil {
		t.Errorf("gRPC call: %v", err)
	}

	exported := scrapeNames(t, "http://"+k.debug+"/metrics")
	dash := readText(t, "../docs/grafana/kedge.json")
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(dash), &d); err != nil {
		t.Fatalf("docs/grafana/kedge.json: %v", err)
	}
	var queries []string
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			queries = append(queries, q.Expr)
		}
	}
	var rules struct { // Prometheus's rule file format, strictly: a misspelt field fails
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict([]byte(readText(t, "../docs/alerts.yaml")), &rules); err != nil {
		t.Fatalf("docs/alerts.yaml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("docs/alerts.yaml: a rule without alert or expr: %+v", r)
			}
			queries = append(queries, r.Expr)
		}
	}
	if len(d.Panels) < 8 || len(queries) < 15 {
		t.Fatalf("found %d panels and %d queries in all; the parsing is broken", len(d.Panels), len(queries))
	}
	nameRE := regexp.MustCompile(`\bkedge_[a-z0-9_]+`)
	for _, q := range queries {
		names := nameRE.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("query uses no kedge metric: %s", q)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("query uses %s, which kedge does not export: %s", n, q)
			}
		}
	}
}

// scrapeNames returns the sample names of a Prometheus text page, with each histogram's and summary's base name.
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		names[name] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				names[base] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}
