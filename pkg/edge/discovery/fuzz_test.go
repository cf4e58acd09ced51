package discovery

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
)

// FuzzGenerate feeds generate Services whose names, annotations and ports come from the fuzzer (a Service is
// written by anyone allowed to create one in a watched namespace, so it is untrusted input). Whatever it returns
// must survive the validator and the merge, and a Service it accepts must yield routes and backends that point at
// that Service only.
func FuzzGenerate(f *testing.F) {
	f.Add("echo", "shop", "", "", "", "http,grpc-api", []byte{0, 80, 0, 0, 1, 187, 0, 1}, "8080")
	f.Add("echo", "shop", "Echo.Example.COM", "a, b,,c", "pkg.Echo", "httptls-admin,grpctls", []byte{1, 0, 0, 2}, "web")
	f.Add("a-b", "c-d", "*.x.test", "", "", "http,http-2,metrics", []byte{0, 1, 0, 1, 0, 2}, "")
	f.Add("", "", " ", ",", "", "", []byte{}, "0")
	f.Fuzz(func(t *testing.T, name, namespace, host, perms, grpcService, portNames string, ports []byte, target string) {
		names := strings.Split(portNames, ",")
		if len(names) > 8 {
			names = names[:8]
		}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: namespace,
			Annotations: map[string]string{
				"kedge.com/" + config.HostMatcherAnnotation:         host,
				"kedge.com/" + config.RequiredPermissionsAnnotation: perms,
				"kedge.com/" + config.ServiceNameMatcherAnnotation:  grpcService,
			},
		}}
		for i, n := range names {
			p := corev1.ServicePort{Name: n}
			if 2*i+1 < len(ports) {
				p.Port = int32(ports[2*i])<<8 | int32(ports[2*i+1])
			}
			switch {
			case target == "":
			case i%2 == 0:
				p.TargetPort = intstr.Parse(target)
			default:
				p.TargetPort = intstr.FromInt32(p.Port)
			}
			svc.Spec.Ports = append(svc.Spec.Ports, p)
		}
		g, err := generate(svc, Options{LabelPrefix: "kedge.com/", DomainSuffix: "cluster.test"})
		if err != nil {
			if !strings.Contains(err.Error(), sourceOf(svc)) {
				t.Fatalf("error %q does not name %s", err, sourceOf(svc))
			}
			return
		}
		want := name + "." + namespace + ":"
		for _, b := range g.Backends {
			if b.Resolver.Kind != backend.ResolverK8s || !strings.HasPrefix(b.Resolver.K8sTarget, want) {
				t.Fatalf("backend %q resolves %q, not a port of %s", b.Name, b.Resolver.K8sTarget, sourceOf(svc))
			}
			if strings.Contains(b.Name, "-") {
				t.Fatalf("backend name %q keeps a '-'", b.Name)
			}
		}
		for _, r := range g.HTTPRoutes {
			if r.Host != strings.ToLower(r.Host) {
				t.Fatalf("route host %q is not lower case", r.Host)
			}
		}
		merged, rejected := config.Merge(&config.Dynamic{}, config.Check([]config.Generated{g}))
		if len(rejected) == 0 && len(merged.HTTPRoutes)+len(merged.GRPCRoutes) != len(g.HTTPRoutes)+len(g.GRPCRoutes) {
			t.Fatalf("accepted Service merged %d routes of %d", len(merged.HTTPRoutes)+len(merged.GRPCRoutes),
				len(g.HTTPRoutes)+len(g.GRPCRoutes))
		}
		for _, r := range rejected {
			if r.Source != g.Source || r.Err == nil {
				t.Fatalf("rejection %+v does not say which Service and why", r)
			}
		}
	})
}

// FuzzEndpointsOf feeds endpointsOf EndpointSlices built from fuzzer bytes (addresses, ports, names, conditions).
// Every endpoint it returns must be an address of a slice joined with a port that the target selects.
func FuzzEndpointsOf(f *testing.F) {
	f.Add([]byte{4, 10, 0, 0, 1, 1, 0, 80, 3}, "http", int32(0))
	f.Add([]byte{6, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 31, 144, 1}, "", int32(8080))
	f.Add([]byte{4, 10, 0, 0, 1, 1, 0, 80, 0, 4, 10, 0, 0, 2, 2, 0, 81, 6}, "", int32(0))
	f.Add([]byte{}, "grpc", int32(0))
	f.Fuzz(func(t *testing.T, data []byte, portName string, portNumber int32) {
		tgt := config.K8sTarget{Service: "svc", Namespace: "ns", PortName: portName, PortNumber: portNumber}
		if portName != "" {
			tgt.PortNumber = 0
		}
		slices, allowed := fuzzSlices(data)
		eps, err := endpointsOf(slices, tgt)
		if err != nil {
			if len(eps) != 0 {
				t.Fatalf("error %v with endpoints %v", err, eps)
			}
			return
		}
		for _, ep := range eps {
			host, port, err := net.SplitHostPort(ep)
			if err != nil {
				t.Fatalf("endpoint %q: %v", ep, err)
			}
			if !allowed[host+"|"+port] {
				t.Fatalf("endpoint %q is not an address of a slice with that port (%v)", ep, allowed)
			}
			if tgt.PortNumber != 0 && port != strconv.Itoa(int(tgt.PortNumber)) {
				t.Fatalf("endpoint %q, target port %d", ep, tgt.PortNumber)
			}
		}
	})
}

// fuzzSlices decodes data into EndpointSlices: per slice a family byte (4 or 6, else FQDN), one address, a port
// name index byte, two port bytes and a conditions byte (bits: ready set, ready, serving set, serving,
// terminating). allowed holds every "address|port" pair a correct endpointsOf may return.
func fuzzSlices(data []byte) ([]*discoveryv1.EndpointSlice, map[string]bool) {
	portNames := []string{"", "http", "grpc", "http-2"}
	allowed := map[string]bool{}
	var out []*discoveryv1.EndpointSlice
	for len(data) > 0 && len(out) < 16 {
		fam := data[0]
		data = data[1:]
		s := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeFQDN}
		var addr string
		switch fam {
		case 4:
			if len(data) < 4 {
				return out, allowed
			}
			addr = netip.AddrFrom4([4]byte(data[:4])).String()
			data = data[4:]
			s.AddressType = discoveryv1.AddressTypeIPv4
		case 6:
			if len(data) < 16 {
				return out, allowed
			}
			addr = netip.AddrFrom16([16]byte(data[:16])).String()
			data = data[16:]
			s.AddressType = discoveryv1.AddressTypeIPv6
		default:
			addr = "host.test"
		}
		if len(data) < 4 {
			return out, allowed
		}
		name := portNames[int(data[0])%len(portNames)]
		port := int32(data[1])<<8 | int32(data[2])
		cond := data[3]
		data = data[4:]
		ep := discoveryv1.Endpoint{Addresses: []string{addr}}
		if cond&1 != 0 {
			ep.Conditions.Ready = ptr.To(cond&2 != 0)
		}
		if cond&4 != 0 {
			ep.Conditions.Serving = ptr.To(cond&8 != 0)
		}
		if cond&16 != 0 {
			ep.Conditions.Terminating = ptr.To(true)
		}
		s.Endpoints = []discoveryv1.Endpoint{ep}
		if cond&32 == 0 {
			s.Ports = []discoveryv1.EndpointPort{{Name: ptr.To(name), Port: ptr.To(port)}}
			allowed[addr+"|"+strconv.Itoa(int(port))] = true
		}
		out = append(out, s)
	}
	return out, allowed
}
