package credentials

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

// fakeClock is a settable clock for Deps.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestUnavailableSourceFailsAlone: a kube source whose kubeconfig is missing and a service-account source whose key
// is missing do not stop the Set; they answer with the reason, the other sources work, and the kube source recovers
// once its kubeconfig exists (at the next attempt after a second, or at once on Login).
func TestUnavailableSourceFailsAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig") // not written yet
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	log := newTestLog()
	set, err := New([]config.AuthSource{
		{Name: "fixed", Kind: config.KindToken, Token: "fixed-token"},
		kubeSourceFor(kubeconfig, "bob"),
		{Name: "sa", Kind: config.KindServiceAccountOIDC, Provider: "http://127.0.0.1:1", ClientID: "c",
			ServiceAccountJSONPath: filepath.Join(dir, "nonexistent-key.json")},
	}, Deps{StateDir: t.TempDir(), Log: log, Now: clock.Now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	unavailable := set.Unavailable()
	if len(unavailable) != 2 ||
		!strings.Contains(unavailable[0].Error(), `auth source "k8s": loading kubeconfig`) ||
		!strings.Contains(unavailable[1].Error(), `auth source "sa": reading the service-account key`) {
		t.Fatalf("Unavailable = %v; want the kube source, then the service-account source, each with its reason", unavailable)
	}
	var srcErr *Error
	if !errors.As(unavailable[0], &srcErr) || srcErr.Source != "k8s" {
		t.Errorf("Unavailable()[0] = %#v; want an *Error of source k8s", unavailable[0])
	}

	fixed, _ := set.Get("fixed")
	if tok, err := fixed.Token(t.Context()); err != nil || tok != "fixed-token" {
		t.Errorf("fixed.Token = %q, %v; the other sources must work", tok, err)
	}
	if err := set.Login(t.Context(), "fixed", LoginOptions{}); err != nil {
		t.Errorf("Login(fixed) = %v; logging in to another source must work", err)
	}
	k8s, _ := set.Get("k8s")
	if _, err := k8s.Token(t.Context()); err == nil || !strings.Contains(err.Error(), `auth source "k8s": loading kubeconfig`) ||
		!strings.Contains(err.Error(), kubeconfig) {
		t.Errorf("k8s.Token = %v; want the load error naming the source and the file", err)
	}
	if err := set.Login(t.Context(), "k8s", LoginOptions{}); err == nil || !strings.Contains(err.Error(), "loading kubeconfig") {
		t.Errorf("Login(k8s) = %v; want the load error", err)
	}
	if err := set.Logout("k8s"); err != nil {
		t.Errorf("Logout(k8s) = %v; a source never built has nothing to forget", err)
	}
	k8s.Invalidate("anything") // must not panic on a source never built

	writeKubeconfig(t, dir, "- name: bob\n  user:\n    token: bob-token\n")
	if _, err := k8s.Token(t.Context()); err == nil {
		t.Errorf("k8s.Token succeeded within a second of the last attempt; attempts are limited to one per second")
	}
	clock.Add(rebuildInterval)
	if tok, err := k8s.Token(t.Context()); err != nil || tok != "bob-token" {
		t.Errorf("k8s.Token after the kubeconfig appeared = %q, %v; want bob-token", tok, err)
	}
	if u := set.Unavailable(); len(u) != 1 || !strings.Contains(u[0].Error(), `"sa"`) {
		t.Errorf("Unavailable after k8s recovered = %v; want only sa", u)
	}
	if !strings.Contains(log.text(), "auth source loaded") {
		t.Errorf("the recovery was not logged:\n%s", log.text())
	}
	if strings.Contains(log.text(), "bob-token") {
		t.Errorf("a token was logged:\n%s", log.text())
	}

	// Login tries again at once, without waiting for the interval.
	dir2 := t.TempDir()
	set2, err := New([]config.AuthSource{kubeSourceFor(filepath.Join(dir2, "kubeconfig"), "bob")},
		Deps{StateDir: t.TempDir(), Log: newTestLog(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	writeKubeconfig(t, dir2, "- name: bob\n  user:\n    token: later-token\n")
	if err := set2.Login(t.Context(), "k8s", LoginOptions{}); err != nil {
		t.Errorf("Login once the kubeconfig exists = %v", err)
	}
}
