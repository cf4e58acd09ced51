package wire_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

func TestWriteKedgeError(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Length", "999")
	wire.WriteKedgeError(rec, 502, wire.ErrNoRoute, "unknown route to service\r\nX-Evil: 1")
	if rec.Code != 502 {
		t.Errorf("status %d", rec.Code)
	}
	if got := rec.Header().Get(wire.HeaderKedgeErrorType); got != "no-route" {
		t.Errorf("error type %q", got)
	}
	if got := rec.Header().Get(wire.HeaderKedgeError); strings.ContainsAny(got, "\r\n") || !strings.HasPrefix(got, "unknown route to service") {
		t.Errorf("X-Kedge-Error %q: want the message without control characters", got)
	}
	if rec.Header().Get("Content-Length") != "" {
		t.Error("a stale Content-Length survived")
	}
	if !strings.HasPrefix(rec.Body.String(), "unknown route to service") {
		t.Errorf("body %q", rec.Body.String())
	}

	rec = httptest.NewRecorder()
	wire.WriteWinchError(rec, 403, wire.ErrNotKedgeDestination, strings.Repeat("x", 2000))
	if got := rec.Header().Get(wire.HeaderWinchError); len(got) != 512 {
		t.Errorf("X-Winch-Error length %d, want it bounded to 512", len(got))
	}
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	a, b := wire.NewRequestID(), wire.NewRequestID()
	if a == b || len(a) != 32 || !wire.ValidRequestID(a) {
		t.Errorf("NewRequestID gave %q and %q", a, b)
	}
	for id, want := range map[string]bool{
		"winch-0123": true, "": false, "has space": false, "tab\tid": false, "ünicode": false,
		strings.Repeat("a", 128): true, strings.Repeat("a", 129): false,
	} {
		if got := wire.ValidRequestID(id); got != want {
			t.Errorf("ValidRequestID(%q) = %v, want %v", id, got, want)
		}
	}
}
