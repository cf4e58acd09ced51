package discovery

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

// fakeClientset is a fake API holding objs; informers on it list and watch for real.
func fakeClientset(objs ...runtime.Object) *fake.Clientset { return fake.NewClientset(objs...) }

// runInBackground runs run until the test ends, then cancels it and waits for it to return.
func runInBackground(t *testing.T, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// ep is an endpoint of a test EndpointSlice.
type ep struct {
	ip                          string
	ready, serving, terminating *bool
}

func readyEP(ip string) ep    { return ep{ip: ip} }
func notReadyEP(ip string) ep { return ep{ip: ip, ready: ptr.To(false), serving: ptr.To(false)} }
func terminatingEP(ip string, serving bool) ep {
	return ep{ip: ip, ready: ptr.To(false), serving: ptr.To(serving), terminating: ptr.To(true)}
}

// slice makes an EndpointSlice of service; ports are "name=number", "=number" (unnamed) or "name=number/UDP".
func slice(name, service, ns string, ports []string, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		spec, proto, _ := strings.Cut(p, "/")
		n, num, _ := strings.Cut(spec, "=")
		var number int32
		fmt.Sscan(num, &number)
		epp := discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(number)}
		if proto != "" {
			epp.Protocol = ptr.To(corev1.Protocol(proto))
		}
		s.Ports = append(s.Ports, epp)
	}
	for _, e := range eps {
		if strings.Contains(e.ip, ":") {
			s.AddressType = discoveryv1.AddressTypeIPv6
		}
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating},
		})
	}
	return s
}

// service makes a Service; ports are "name=port" or "name=port:target" (target a number or a name).
func service(name, ns string, labels, annotations map[string]string, ports ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
	}
	for _, p := range ports {
		n, rest, _ := strings.Cut(p, "=")
		num, target, hasTarget := strings.Cut(rest, ":")
		var number int32
		fmt.Sscan(num, &number)
		sp := corev1.ServicePort{Name: n, Port: number, Protocol: corev1.ProtocolTCP}
		if hasTarget {
			sp.TargetPort = intstr.Parse(target)
		}
		s.Spec.Ports = append(s.Spec.Ports, sp)
	}
	return s
}

// exposedLabels labels a Service for exposure with the default prefix.
var exposedLabels = map[string]string{"kedge.com/kedge-exposed": "true"}

// recordingLogger keeps the lines logged at Warn and above.
type recordingLogger struct {
	mu    *sync.Mutex
	lines *[]string
	kv    []any
}

func newRecordingLogger() *recordingLogger {
	return &recordingLogger{mu: &sync.Mutex{}, lines: new([]string)}
}

func (l *recordingLogger) add(level, msg string, kv []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.lines = append(*l.lines, fmt.Sprint(level, " ", msg, " ", append(append([]any{}, l.kv...), kv...)))
}

func (l *recordingLogger) Debug(string, ...any)        {}
func (l *recordingLogger) Info(msg string, kv ...any)  { l.add("INFO", msg, kv) }
func (l *recordingLogger) Warn(msg string, kv ...any)  { l.add("WARN", msg, kv) }
func (l *recordingLogger) Error(msg string, kv ...any) { l.add("ERROR", msg, kv) }
func (l *recordingLogger) Enabled(logging.Level) bool  { return true }
func (l *recordingLogger) With(kv ...any) logging.Logger {
	return &recordingLogger{mu: l.mu, lines: l.lines, kv: append(append([]any{}, l.kv...), kv...)}
}

// has reports whether a recorded line contains every one of parts.
func (l *recordingLogger) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range *l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

func (l *recordingLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(*l.lines, "\n")
}
