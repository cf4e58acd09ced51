package credentials

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLog records every line, so tests can read login instructions and check that no token was logged.
type testLog struct {
	store *logStore
	kv    []any
}

type logStore struct {
	mu    sync.Mutex
	lines []string
}

func newTestLog() *testLog { return &testLog{store: &logStore{}} }

func (l *testLog) add(level, msg string, kv []any) {
	l.store.mu.Lock()
	defer l.store.mu.Unlock()
	l.store.lines = append(l.store.lines, fmt.Sprintf("%s %s %v %v", level, msg, l.kv, kv))
}

func (l *testLog) Debug(msg string, kv ...any) { l.add("DEBUG", msg, kv) }
func (l *testLog) Info(msg string, kv ...any)  { l.add("INFO", msg, kv) }
func (l *testLog) Warn(msg string, kv ...any)  { l.add("WARN", msg, kv) }
func (l *testLog) Error(msg string, kv ...any) { l.add("ERROR", msg, kv) }
func (l *testLog) With(kv ...any) logging.Logger {
	return &testLog{store: l.store, kv: append(append([]any{}, l.kv...), kv...)}
}
func (l *testLog) Enabled(logging.Level) bool { return true }

func (l *testLog) text() string {
	l.store.mu.Lock()
	defer l.store.mu.Unlock()
	return strings.Join(l.store.lines, "\n")
}

// browser plays the user's browser: open GETs the URL in the background (as xdg-open returns at once), following
// the provider's redirect to winch's callback, and records the callback's answer. tamper, when set, may change the
// callback URL before it is requested.
type browser struct {
	t      testing.TB
	client *http.Client
	tamper func(callback string) string
	after  func() // runs once the callback answered

	wg       sync.WaitGroup
	mu       sync.Mutex
	opened   int
	statuses []int
	bodies   []string
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	tr := &http.Transport{}
	b := &browser{t: t, client: &http.Client{Transport: tr}}
	b.client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if b.tamper != nil {
			return http.ErrUseLastResponse // the test follows the redirect itself
		}
		return nil
	}
	t.Cleanup(func() {
		b.wg.Wait()
		tr.CloseIdleConnections()
	})
	return b
}

func (b *browser) open(u string) error {
	b.mu.Lock()
	b.opened++
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		resp, err := b.client.Get(u)
		if err == nil && b.tamper != nil {
			loc := resp.Header.Get("Location")
			resp.Body.Close()
			resp, err = b.client.Get(b.tamper(loc))
		}
		if err != nil {
			b.t.Errorf("browser: %v", err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		b.mu.Lock()
		b.statuses = append(b.statuses, resp.StatusCode)
		b.bodies = append(b.bodies, string(body))
		b.mu.Unlock()
		if b.after != nil {
			b.after()
		}
	}()
	return nil
}

// results waits for every page the browser opened and returns their statuses and bodies.
func (b *browser) results() ([]int, []string, int) {
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.statuses, b.bodies, b.opened
}

// fixture is a test provider, winch's callback listener and a browser.
type fixture struct {
	op      *testOP
	mux     *http.ServeMux
	cb      *httptest.Server
	browser *browser
	log     *testLog
	dir     string
	client  *http.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{op: newTestOP(t), mux: http.NewServeMux(), browser: newBrowser(t), log: newTestLog(), dir: t.TempDir()}
	f.cb = httptest.NewServer(f.mux)
	t.Cleanup(f.cb.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	f.client = &http.Client{Transport: tr}
	return f
}

// deps are Deps for a Set that logs in through the fixture's browser.
func (f *fixture) deps() Deps {
	return Deps{
		Log: f.log, HTTPClient: f.client, StateDir: f.dir, OpenBrowser: f.browser.open,
		Callback: f.mux, CallbackBaseURL: f.cb.URL,
	}
}

// headless are Deps without a callback listener and with a browser that must not be opened.
func (f *fixture) headless(t *testing.T) Deps {
	d := f.deps()
	d.Callback, d.CallbackBaseURL = nil, ""
	d.OpenBrowser = func(string) error {
		t.Errorf("a browser was opened")
		return nil
	}
	return d
}

func (f *fixture) source(name string) config.AuthSource {
	return config.AuthSource{
		Name: name, Kind: config.KindOIDC, Provider: f.op.URL(), ClientID: f.op.clientID, ClientSecret: f.op.secret,
		Scopes: []string{"email", "offline_access"},
	}
}

func (f *fixture) set(t *testing.T, d Deps, srcs ...config.AuthSource) *Set {
	t.Helper()
	s, err := New(srcs, d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func mustGet(t *testing.T, s *Set, name string) Source {
	t.Helper()
	src, ok := s.Get(name)
	if !ok {
		t.Fatalf("Get(%q): not found", name)
	}
	return src
}
