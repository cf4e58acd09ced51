package logging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func TestJSONLinesCarryFields(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l, err := logging.New(logging.Options{Level: "info", Format: "json", Output: &buf})
	if err != nil {
		t.Fatal(err)
	}
	l.With(logging.FieldComponent, "test").Info("hello", logging.FieldStatus, 200, logging.FieldError, errors.New("boom"), "odd")
	l.Debug("hidden")
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("one JSON line expected, got %q: %v", buf.String(), err)
	}
	for k, want := range map[string]any{"msg": "hello", "component": "test", "status": float64(200), "error": "boom", "odd": "(missing)", "level": "info"} {
		if line[k] != want {
			t.Errorf("%s = %v, want %v", k, line[k], want)
		}
	}
	if l.Enabled(logging.LevelDebug) || !l.Enabled(logging.LevelWarn) {
		t.Error("Enabled disagrees with the info level")
	}
}

func TestOptionsAreValidated(t *testing.T) {
	t.Parallel()
	for _, o := range []logging.Options{{Level: "loud"}, {Format: "xml"}} {
		if _, err := logging.New(o); err == nil {
			t.Errorf("New(%+v) accepted invalid options", o)
		}
	}
	if lvl, err := logging.ParseLevel("WARNING"); err != nil || lvl != logging.LevelWarn {
		t.Errorf("ParseLevel(WARNING) = %v, %v", lvl, err)
	}
}

func TestStdLoggerAndGRPCAdapter(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l, err := logging.New(logging.Options{Level: "debug", Output: &buf})
	if err != nil {
		t.Fatal(err)
	}
	logging.StdLogger(l, logging.LevelWarn, "http").Print("TLS handshake error")
	logging.GRPCLogger(l).Warningf("subchannel %d down", 3)
	out := buf.String()
	for _, want := range []string{`level=warning msg="TLS handshake error" component=http`, `msg="subchannel 3 down" component=grpc`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
