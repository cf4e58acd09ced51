package e2e

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
)

// fakeKube is a minimal Kubernetes API server over HTTP, enough for kedge's informers: list and watch (including
// client-go's watch-list streaming) of Services and EndpointSlices, with label selectors, and Event creation. Every
// change gets the next resourceVersion and reaches the open watches; a watch from an older resourceVersion replays
// the changes since.
type fakeKube struct {
	t    *testing.T
	srv  *httptest.Server
	done chan struct{} // closed at cleanup: open watches end

	mu      sync.Mutex
	rv      int
	objects map[string]map[string]metav1.Object // resource -> "namespace/name" -> object
	log     []change                            // every change, in resourceVersion order
	changed chan struct{}                       // closed and replaced on every change
	events  []corev1.Event                      // Events created by clients
}

type change struct {
	rv       int
	resource string
	kind     string // ADDED, MODIFIED, DELETED
	old, cur metav1.Object
}

// fakeResources maps the resources served to their kind and group version.
var fakeResources = map[string]struct{ kind, apiVersion string }{
	"services":       {"Service", "v1"},
	"endpointslices": {"EndpointSlice", "discovery.k8s.io/v1"},
}

func newFakeKube(t *testing.T) *fakeKube {
	t.Helper()
	k := &fakeKube{t: t, done: make(chan struct{}), objects: map[string]map[string]metav1.Object{}, changed: make(chan struct{})}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(k.serve)) // client-go sends credentials over TLS only
	t.Cleanup(func() { close(k.done); k.srv.Close() })
	return k
}

// kubeconfig writes a kubeconfig that points at the fake API server (trusting its certificate) with a token user.
func (k *fakeKube) kubeconfig(t *testing.T, dir string) string {
	t.Helper()
	ca := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw}))
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {server: %q, certificate-authority-data: %q}
users:
- name: kedge
  user: {token: kedge-token}
contexts:
- name: fake
  context: {cluster: fake, user: kedge}
current-context: fake
`, k.srv.URL, ca)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// put creates or replaces a copy of obj (a *corev1.Service or *discoveryv1.EndpointSlice).
func (k *fakeKube) put(obj metav1.Object) {
	resource := resourceOf(obj)
	obj = typed(resource, obj).(metav1.Object)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.rv++
	obj.SetResourceVersion(strconv.Itoa(k.rv))
	if obj.GetUID() == "" {
		obj.SetUID(types.UID(fmt.Sprintf("%s-%s-%s", resource, obj.GetNamespace(), obj.GetName())))
	}
	key := obj.GetNamespace() + "/" + obj.GetName()
	if k.objects[resource] == nil {
		k.objects[resource] = map[string]metav1.Object{}
	}
	old, existed := k.objects[resource][key]
	k.objects[resource][key] = obj
	kind := "ADDED"
	if existed {
		kind = "MODIFIED"
	}
	k.record(change{rv: k.rv, resource: resource, kind: kind, old: old, cur: obj})
}

// remove deletes the object of resource at namespace/name.
func (k *fakeKube) remove(resource, namespace, name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := namespace + "/" + name
	old, ok := k.objects[resource][key]
	if !ok {
		return
	}
	delete(k.objects[resource], key)
	k.rv++
	k.record(change{rv: k.rv, resource: resource, kind: "DELETED", old: old})
}

// record appends c to the log and wakes the watches; k.mu is held.
func (k *fakeKube) record(c change) {
	k.log = append(k.log, c)
	close(k.changed)
	k.changed = make(chan struct{})
}

// createdEvents returns the Events clients created.
func (k *fakeKube) createdEvents() []corev1.Event {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]corev1.Event(nil), k.events...)
}

func resourceOf(obj metav1.Object) string {
	switch obj.(type) {
	case *corev1.Service:
		return "services"
	case *discoveryv1.EndpointSlice:
		return "endpointslices"
	}
	panic(fmt.Sprintf("fakeKube: unsupported object %T", obj))
}

// serve answers list, watch and Event creation; everything else is 404.
func (k *fakeKube) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer kedge-token" {
		k.status(w, http.StatusUnauthorized, "Unauthorized", "no or wrong token")
		return
	}
	resource, namespace, ok := parseAPIPath(r.URL.Path)
	switch {
	case ok && r.Method == http.MethodPost && resource == "events":
		body, err := io.ReadAll(r.Body)
		var obj runtime.Object
		if err == nil {
			obj, _, err = scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil) // clientsets write protobuf
		}
		ev, ok := obj.(*corev1.Event)
		if err != nil || !ok {
			k.status(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("not an Event: %T %v", obj, err))
			return
		}
		k.mu.Lock()
		k.events = append(k.events, *ev)
		k.mu.Unlock()
		ev.APIVersion, ev.Kind = "v1", "Event"
		writeJSON(w, http.StatusCreated, ev)
	case ok && r.Method == http.MethodGet && fakeResources[resource].kind != "":
		selector, err := labels.Parse(r.URL.Query().Get("labelSelector"))
		if err != nil {
			k.status(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		match := func(o metav1.Object) bool {
			return o != nil && (namespace == "" || o.GetNamespace() == namespace) && selector.Matches(labels.Set(o.GetLabels()))
		}
		if r.URL.Query().Get("watch") == "true" {
			k.watch(w, r, resource, match)
			return
		}
		k.list(w, resource, match)
	default:
		k.status(w, http.StatusNotFound, "NotFound", r.Method+" "+r.URL.Path+" is not served by the fake API")
	}
}

// parseAPIPath splits /api/v1[/namespaces/NS]/RESOURCE and /apis/discovery.k8s.io/v1[/namespaces/NS]/RESOURCE.
func parseAPIPath(p string) (resource, namespace string, ok bool) {
	switch {
	case strings.HasPrefix(p, "/api/v1/"):
		p = strings.TrimPrefix(p, "/api/v1/")
	case strings.HasPrefix(p, "/apis/discovery.k8s.io/v1/"):
		p = strings.TrimPrefix(p, "/apis/discovery.k8s.io/v1/")
	default:
		return "", "", false
	}
	parts := strings.Split(p, "/")
	switch {
	case len(parts) == 1:
		return parts[0], "", true
	case len(parts) == 3 && parts[0] == "namespaces":
		return parts[2], parts[1], true
	}
	return "", "", false
}

func (k *fakeKube) list(w http.ResponseWriter, resource string, match func(metav1.Object) bool) {
	k.mu.Lock()
	items := []any{}
	for _, o := range k.objects[resource] {
		if match(o) {
			items = append(items, typed(resource, o))
		}
	}
	rv := k.rv
	k.mu.Unlock()
	res := fakeResources[resource]
	writeJSON(w, http.StatusOK, map[string]any{
		"kind": res.kind + "List", "apiVersion": res.apiVersion,
		"metadata": map[string]any{"resourceVersion": strconv.Itoa(rv)}, "items": items,
	})
}

// watch streams watch events: with sendInitialEvents, the current objects then the "initial events end" bookmark;
// otherwise the changes after the given resourceVersion. It ends at timeoutSeconds, when the client leaves, or at
// cleanup.
func (k *fakeKube) watch(w http.ResponseWriter, r *http.Request, resource string, match func(metav1.Object) bool) {
	q := r.URL.Query()
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(typ string, obj any) bool {
		if err := enc.Encode(map[string]any{"type": typ, "object": obj}); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	timeout := 5 * time.Minute
	if s, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && s > 0 {
		timeout = time.Duration(s) * time.Second
	}
	end := time.NewTimer(timeout)
	defer end.Stop()

	k.mu.Lock()
	since, _ := strconv.Atoi(q.Get("resourceVersion"))
	var initial []any
	if q.Get("sendInitialEvents") == "true" {
		for _, o := range k.objects[resource] {
			if match(o) {
				initial = append(initial, typed(resource, o))
			}
		}
		since = k.rv
	}
	bookmarkRV := k.rv
	k.mu.Unlock()
	for _, o := range initial {
		if !send("ADDED", o) {
			return
		}
	}
	if q.Get("sendInitialEvents") == "true" {
		res := fakeResources[resource]
		bookmark := map[string]any{"kind": res.kind, "apiVersion": res.apiVersion, "metadata": map[string]any{
			"resourceVersion": strconv.Itoa(bookmarkRV),
			"annotations":     map[string]string{metav1.InitialEventsAnnotationKey: "true"},
		}}
		if !send("BOOKMARK", bookmark) {
			return
		}
	}
	for {
		k.mu.Lock()
		var pending []change
		for _, c := range k.log {
			if c.rv > since && c.resource == resource {
				pending = append(pending, c)
			}
		}
		wake := k.changed
		k.mu.Unlock()
		for _, c := range pending {
			since = c.rv
			typ, obj := c.kind, c.cur
			switch {
			case c.kind == "DELETED" && match(c.old):
				obj = c.old
			case c.kind == "DELETED":
				continue
			case !match(c.cur) && match(c.old): // left the selector
				typ, obj = "DELETED", c.old
			case !match(c.cur):
				continue
			case !match(c.old): // entered the selector
				typ = "ADDED"
			}
			out := typed(resource, obj)
			if c.kind == "DELETED" || typ == "DELETED" {
				out = withRV(resource, obj, c.rv)
			}
			if !send(typ, out) {
				return
			}
		}
		select {
		case <-wake:
		case <-end.C:
			return
		case <-r.Context().Done():
			return
		case <-k.done:
			return
		}
	}
}

// typed returns obj with its kind and apiVersion set, for encoding.
func typed(resource string, obj metav1.Object) any {
	res := fakeResources[resource]
	switch o := obj.(type) {
	case *corev1.Service:
		c := o.DeepCopy()
		c.Kind, c.APIVersion = res.kind, res.apiVersion
		return c
	case *discoveryv1.EndpointSlice:
		c := o.DeepCopy()
		c.Kind, c.APIVersion = res.kind, res.apiVersion
		return c
	}
	return obj
}

// withRV returns typed(obj) carrying resourceVersion rv (a deletion's).
func withRV(resource string, obj metav1.Object, rv int) any {
	out := typed(resource, obj)
	out.(metav1.Object).SetResourceVersion(strconv.Itoa(rv))
	return out
}

func (k *fakeKube) status(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: metav1.StatusReason(reason), Code: int32(code),
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
