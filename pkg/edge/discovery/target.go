package discovery

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
)

// endpointsOf returns the "ip:port" endpoints of the Service that all (its EndpointSlices) belong to, for t's port. Ready endpoints
// are used; only when none is ready anywhere are serving-but-terminating ones used (so a Service whose pods are all
// shutting down still drains its traffic). Slices of other address types (FQDN), slices without endpoints (the
// port-less placeholder the EndpointSlice controller leaves for a Service without pods) and non-TCP ports are
// ignored. It fails when t names no port and the slices have several, or when t names a port that no slice with
// endpoints has.
func endpointsOf(all []*discoveryv1.EndpointSlice, t config.K8sTarget) ([]string, error) {
	var ready, terminating []string
	portsSeen := map[string]bool{} // TCP port names ("" = unnamed) across all slices, for "no port given"
	found := t.PortName == "" && t.PortNumber == 0
	considered := 0
	for _, s := range all {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		if len(s.Endpoints) == 0 {
			// Nothing to route to; its ports (none, for the placeholder) must not turn "no pods" into an error
			// that keeps the endpoints of pods that are gone.
			continue
		}
		considered++
		port, ok := pickPort(s.Ports, t, portsSeen)
		if !ok {
			continue
		}
		found = true
		p := strconv.Itoa(int(port))
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			addr := net.JoinHostPort(ep.Addresses[0], p) // all addresses of an endpoint are the same pod
			c := ep.Conditions
			isReady := c.Ready == nil || *c.Ready // nil means unknown, to be read as ready
			serving := isReady
			if c.Serving != nil {
				serving = *c.Serving
			}
			switch {
			case isReady:
				ready = append(ready, addr)
			case serving && c.Terminating != nil && *c.Terminating:
				terminating = append(terminating, addr)
			}
		}
	}
	if len(portsSeen) > 1 {
		names := make([]string, 0, len(portsSeen))
		for n := range portsSeen {
			names = append(names, strconv.Quote(n))
		}
		slices.Sort(names)
		return nil, fmt.Errorf("discovery: service %s/%s has several ports (%s): name one in the target", t.Namespace, t.Service, strings.Join(names, ", "))
	}
	if !found && considered > 0 {
		return nil, fmt.Errorf("discovery: service %s has no TCP port %s", t.Namespace+"/"+t.Service, portLabel(t))
	}
	if len(ready) == 0 {
		return terminating, nil
	}
	return ready, nil
}

// pickPort returns the number of the port of ports that t selects. Without a port in t it records the TCP ports
// in seen, and picks the only one.
func pickPort(ports []discoveryv1.EndpointPort, t config.K8sTarget, seen map[string]bool) (int32, bool) {
	var only int32
	n := 0
	for _, p := range ports {
		if p.Port == nil || p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		switch {
		case t.PortName != "":
			if name == t.PortName {
				return *p.Port, true
			}
		case t.PortNumber != 0:
			if *p.Port == t.PortNumber {
				return *p.Port, true
			}
		default:
			seen[name] = true
			only = *p.Port
			n++
		}
	}
	return only, n == 1
}

func portLabel(t config.K8sTarget) string {
	if t.PortName != "" {
		return strconv.Quote(t.PortName)
	}
	return strconv.Itoa(int(t.PortNumber))
}
