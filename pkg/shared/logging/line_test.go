package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// lineKV are the fields every format test writes: the kinds of values the proxies' lines carry, including ones
// that need quoting or escaping.
var lineKV = []any{
	"request_id", "0123abcd", "path", "/a b?\"c\"\\", "status", 200, "bytes", int64(-7), "port", uint32(443),
	"duration", 1500 * time.Microsecond, "ok", true, "error", errors.New("dial tcp: refused\n"), "empty", "",
	"utf8", "café \x01 \xff", "none", nil,
}

// logrusLine is what logrus itself writes for msg and kv with the formatter New configures: the reference.
func logrusLine(t *testing.T, format string, with, kv []any) string {
	t.Helper()
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	if format == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	f, _ := fields(with)
	g, _ := fields(kv)
	maps.Copy(f, g)
	l.WithFields(f).Info("http request")
	return buf.String()
}

// TestFastLinesMatchLogrus: the fast formatter writes the same fields with the same values as logrus would, in
// both formats (field order aside; time left out).
func TestFastLinesMatchLogrus(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(Options{Level: "info", Format: format, Output: &buf})
			if err != nil {
				t.Fatal(err)
			}
			with := []any{FieldComponent, "httpproxy", "n", 3}
			l.With(with...).Info("http request", lineKV...)
			got, want := parseLine(t, format, buf.String()), parseLine(t, format, logrusLine(t, format, with, lineKV))
			if !maps.Equal(got, want) {
				t.Errorf("fast line differs from logrus:\n got %v\nwant %v\nline %q", got, want, buf.String())
			}
		})
	}
}

// parseLine parses one JSON or logfmt line into key -> value text, leaving out the time.
func parseLine(t *testing.T, format, line string) map[string]string {
	t.Helper()
	out := map[string]string{}
	line = strings.TrimSuffix(line, "\n")
	if strings.Contains(line, "\n") {
		t.Fatalf("more than one line: %q", line)
	}
	if format == "json" {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		for k, v := range m {
			b, _ := json.Marshal(v)
			out[k] = string(b)
		}
	} else {
		for rest := line; rest != ""; {
			k, v, ok := strings.Cut(rest, "=")
			if !ok {
				t.Fatalf("logfmt %q: no '=' in %q", line, rest)
			}
			if strings.HasPrefix(v, `"`) {
				q, err := strconv.QuotedPrefix(v)
				if err != nil {
					t.Fatalf("logfmt %q: %v", line, err)
				}
				out[k], _ = strconv.Unquote(q)
				rest = strings.TrimPrefix(v[len(q):], " ")
			} else {
				val, next, _ := strings.Cut(v, " ")
				out[k], rest = val, next
			}
		}
	}
	delete(out, "time")
	return out
}

// TestLineBuilder: a Line writes its fields in the Logger's format, and through any other Logger as kv pairs.
func TestLineBuilder(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l, err := New(Options{Level: "info", Format: "json", Output: &buf})
	if err != nil {
		t.Fatal(err)
	}
	Begin(l, LevelInfo, "grpc call").Str("a", "x").StrIf("skipped", "").Int("n", 5).Dur("d", time.Second).Bool("b", true).Write()
	got := parseLine(t, "json", buf.String())
	want := map[string]string{"level": `"info"`, "msg": `"grpc call"`, "a": `"x"`, "n": "5", "d": `"1s"`, "b": "true"}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if ln := Begin(l, LevelDebug, "off"); ln != nil {
		t.Error("Begin returned a line for a disabled level")
	}
	Begin(l, LevelDebug, "off").Str("x", "y").Write() // nil receivers do nothing

	rec := &recorder{}
	Begin(rec, LevelWarn, "other").Str("a", "x").Int("n", 5).Write()
	if len(rec.lines) != 1 || rec.lines[0] != "warn other [a x n 5]" {
		t.Errorf("fallback wrote %q", rec.lines)
	}
}

// recorder is a Logger that is not from New.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) add(level, msg string, kv []any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, v := range kv {
		parts = append(parts, toString(v))
	}
	r.lines = append(r.lines, level+" "+msg+" ["+strings.Join(parts, " ")+"]")
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return "?"
}

func (r *recorder) Debug(msg string, kv ...any) { r.add("debug", msg, kv) }
func (r *recorder) Info(msg string, kv ...any)  { r.add("info", msg, kv) }
func (r *recorder) Warn(msg string, kv ...any)  { r.add("warn", msg, kv) }
func (r *recorder) Error(msg string, kv ...any) { r.add("error", msg, kv) }
func (r *recorder) With(...any) Logger          { return r }
func (r *recorder) Enabled(Level) bool          { return true }

// TestBufferedOutput: with a FlushInterval, info lines wait for the interval (or Flush), warnings go out at once
// with what was buffered before them, and nothing is lost or reordered.
func TestBufferedOutput(t *testing.T) {
	t.Parallel()
	out := &testutil.Buffer{}
	l, err := New(Options{Level: "info", Format: "text", Output: out, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("first", "k", "v")
	Begin(l, LevelInfo, "second").Str("k", "v").Write()
	if s := out.String(); s != "" {
		t.Fatalf("written before the interval: %q", s)
	}
	l.Warn("third")
	if s := out.String(); strings.Count(s, "\n") != 3 || !strings.Contains(s, "msg=first") ||
		strings.Index(s, "msg=second") > strings.Index(s, "msg=third") {
		t.Fatalf("after a warning: %q", s)
	}
	l.Info("fourth")
	if err := Flush(l); err != nil || !strings.Contains(out.String(), "msg=fourth") {
		t.Fatalf("Flush: %v, %q", err, out.String())
	}

	fast := &testutil.Buffer{}
	l2, _ := New(Options{Level: "info", Output: fast, FlushInterval: time.Millisecond})
	l2.Info("timed")
	testutil.Eventually(t, "the timed flush", func() bool { return strings.Contains(fast.String(), "msg=timed") })
}

// TestDroppedWhenOutputStalls: lines beyond the buffer limit are dropped and counted, not blocking callers.
func TestDroppedWhenOutputStalls(t *testing.T) {
	t.Parallel()
	stall := &stallWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	l, _ := New(Options{Level: "info", Output: stall, FlushInterval: time.Millisecond})
	l.Info("first")
	select { // the timed flush is now stuck in the output
	case <-stall.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the timed flush never came")
	}
	big := strings.Repeat("x", 1000)
	start := time.Now()
	for range 6000 { // 6 MB: more than the buffer limit; none of these calls may block
		l.Info("line", "v", big)
	}
	if Dropped(l) == 0 {
		t.Error("no line dropped while the output stalled")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("logging blocked for %v behind the stalled output", d)
	}
	close(stall.release)
	if err := Flush(l); err != nil {
		t.Fatal(err)
	}
}

type stallWriter struct {
	entered chan struct{}
	release chan struct{}
}

func (s *stallWriter) Write(p []byte) (int, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return len(p), nil
}

// TestLineAllocs locks in that a request line costs no allocation once the pool is warm.
func TestLineAllocs(t *testing.T) {
	l, _ := New(Options{Level: "info", Format: "json", Output: io.Discard, FlushInterval: time.Hour})
	l = l.With(FieldComponent, "httpproxy")
	n := testing.AllocsPerRun(200, func() {
		Begin(l, LevelInfo, "http request").Str(FieldRequestID, "0123456789abcdef").Str(FieldPath, "/api/v1").
			Int(FieldStatus, 200).Dur(FieldDuration, time.Millisecond).Write()
	})
	if n > 0 {
		t.Errorf("%v allocations per line, want 0", n)
	}
	_ = Flush(l)
}

// TestDurations: durations carry their unit in JSON as in text, and time.ParseDuration reads them back (to the
// precision written).
func TestDurations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0ns"},
		{850, "850ns"},
		{12500, "12.5µs"},
		{128415 * time.Microsecond, "128.415ms"},
		{128415678, "128.415ms"},
		{3200 * time.Millisecond, "3.2s"},
		{2*time.Hour + 3*time.Second, "7203s"},
		{-1500 * time.Microsecond, "-1.5ms"},
	}
	for _, tt := range tests {
		got := FormatDuration(tt.d)
		if got != tt.want {
			t.Errorf("FormatDuration(%d) = %q, want %q", tt.d, got, tt.want)
		}
		if back, err := time.ParseDuration(got); err != nil || back > tt.d && tt.d >= 0 || tt.d-back >= time.Microsecond*time.Duration(max(1, tt.d/time.Second)) {
			t.Errorf("ParseDuration(%q) = %v, %v; want about %v", got, back, err, tt.d)
		}
	}
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		l, err := New(Options{Level: "info", Format: format, Output: &buf})
		if err != nil {
			t.Fatal(err)
		}
		l.Info("kv", FieldDuration, 1500*time.Microsecond)                            // the fast path
		l.Info("func", FieldDuration, 1500*time.Microsecond, "f", func() {})          // through logrus
		Begin(l, LevelInfo, "line").Dur(FieldDuration, 1500*time.Microsecond).Write() // a Line
		want := `"duration":"1.5ms"`
		if format == "text" {
			want = "duration=1.5ms"
		}
		if n := strings.Count(buf.String(), want); n != 3 {
			t.Errorf("%s: %d lines with %s, want 3:\n%s", format, n, want, buf.String())
		}
	}
}
