package discovery

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Target is a parsed k8s resolver target: "<service>[.<namespace>[.<anything>]][:<port number>|:<port name>]".
type Target struct {
	Service   string
	Namespace string // "default" when the target names none
	// PortName or PortNumber selects the endpoint port; both empty means the Service must have exactly one port.
	PortName   string
	PortNumber int32
}

// String returns "namespace/service:port".
func (t Target) String() string {
	s := t.Namespace + "/" + t.Service
	switch {
	case t.PortName != "":
		s += ":" + t.PortName
	case t.PortNumber != 0:
		s += ":" + strconv.Itoa(int(t.PortNumber))
	}
	return s
}

// ParseTarget parses a k8s resolver target. Labels after the namespace ("svc.ns.svc.cluster.local") are ignored;
// a trailing ':' means no port. A port number selects the endpoints' (target) port of that number; a name selects
// the Service port of that name.
func ParseTarget(s string) (Target, error) {
	if s == "" {
		return Target{}, errors.New("discovery: empty k8s target")
	}
	if strings.Contains(s, "://") {
		return Target{}, fmt.Errorf("discovery: k8s target %q must not have a scheme", s)
	}
	hostPart, port, _ := strings.Cut(s, ":")
	if strings.Contains(port, ":") {
		return Target{}, fmt.Errorf("discovery: k8s target %q has more than one ':'", s)
	}
	labels := strings.Split(hostPart, ".")
	t := Target{Service: labels[0], Namespace: "default"}
	if !isDNSLabel(t.Service) || t.Service[0] < 'a' {
		return Target{}, fmt.Errorf("discovery: k8s target %q does not start with a Service name", s)
	}
	if len(labels) > 1 {
		if !isDNSLabel(labels[1]) {
			return Target{}, fmt.Errorf("discovery: k8s target %q has an invalid namespace", s)
		}
		t.Namespace = labels[1]
	}
	if port == "" {
		return t, nil
	}
	if n, err := strconv.ParseUint(port, 10, 16); err == nil {
		if n == 0 {
			return Target{}, fmt.Errorf("discovery: k8s target %q has port 0", s)
		}
		t.PortNumber = int32(n)
		return t, nil
	}
	if !isDNSLabel(port) || strings.Trim(port, "0123456789") == "" {
		return Target{}, fmt.Errorf("discovery: k8s target %q has an invalid port", s)
	}
	t.PortName = port
	return t, nil
}

// isDNSLabel reports whether s is an RFC 1123 label: 1-63 lower-case letters, digits and '-', alphanumeric at both
// ends.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// endpointsOf returns the "ip:port" endpoints of the Service that all (its EndpointSlices) belong to, for t's port. Ready endpoints
// are used; only when none is ready anywhere are serving-but-terminating ones used (so a Service whose pods are all
// shutting down still drains its traffic). Slices of other address types (FQDN), slices without endpoints (the
// port-less placeholder the EndpointSlice controller leaves for a Service without pods) and non-TCP ports are
// ignored. It fails when t names no port and the slices have several, or when t names a port that no slice with
// endpoints has.
func endpointsOf(all []*discoveryv1.EndpointSlice, t Target) ([]string, error) {
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
func pickPort(ports []discoveryv1.EndpointPort, t Target, seen map[string]bool) (int32, bool) {
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

func portLabel(t Target) string {
	if t.PortName != "" {
		return strconv.Quote(t.PortName)
	}
	return strconv.Itoa(int(t.PortNumber))
}
