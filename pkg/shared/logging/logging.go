// Package logging is the one seam between kedge/winch and logrus: a narrow structured Logger interface, field-name
// constants, and adapters for libraries that want their own logger type (grpclog, http.Server.ErrorLog).
package logging

import (
	"fmt"
	"io"
	"log"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Logger is the structured logger every component receives in its constructor. kv is a list of alternating keys
// (strings) and values.
type Logger interface {
	Debug(msg string, kv ...any)
	Info(msg string, kv ...any)
	Warn(msg string, kv ...any)
	Error(msg string, kv ...any)
	// With returns a logger that adds kv to every line.
	With(kv ...any) Logger
	// Enabled reports whether lines at level would be written, so hot paths can skip building fields.
	Enabled(level Level) bool
}

// Level is a log severity.
type Level uint8

// Levels, from most to least verbose.
const (
	LevelDebug Level = iota
	LevelInfo
	LevelWarn
	LevelError
)

// Field names shared by kedge and winch, so log queries work across both.
const (
	FieldRequestID = "request_id"
	FieldMethod    = "method"
	FieldHost      = "host"
	FieldPath      = "path"
	FieldGRPC      = "grpc_method"
	FieldRoute     = "route"
	FieldBackend   = "backend"
	FieldEndpoint  = "endpoint"
	FieldStatus    = "status"
	FieldDuration  = "duration"
	FieldBytes     = "bytes"
	FieldError     = "error"
	FieldErrorType = "error_type"
	FieldIdentity  = "identity"
	FieldComponent = "component"
	FieldFile      = "file"
	FieldAddr      = "addr"
)

// Options configures New.
type Options struct {
	// Level is one of debug, info, warn, error.
	Level string
	// Format is "text" or "json".
	Format string
	// Output receives the lines; nil means os.Stderr.
	Output io.Writer
	// FlushInterval batches lines: they are written together at most this long after the first (warnings and errors
	// at once, with whatever is buffered before them), so a request does not pay a write(2) for its log line. 0
	// writes every line at once. With a FlushInterval, call Flush before exiting.
	FlushInterval time.Duration
}

// New builds a Logger from opts, or reports why the options are invalid.
func New(opts Options) (Logger, error) {
	l := logrus.New()
	out := opts.Output
	if out == nil {
		out = os.Stderr
	}
	lvl, err := ParseLevel(opts.Level)
	if err != nil {
		return nil, err
	}
	l.SetLevel(toLogrus(lvl))
	f := &fastFormat{out: newAsyncWriter(out, opts.FlushInterval)}
	l.SetOutput(f.out)
	switch strings.ToLower(opts.Format) {
	case "", "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
		f.json = true
	default:
		return nil, fmt.Errorf("logging: unknown format %q (want text or json)", opts.Format)
	}
	return &entry{e: logrus.NewEntry(l), fast: f}, nil
}

// ParseLevel parses a level name; "warning" is accepted for warn.
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug", "trace":
		return LevelDebug, nil
	case "", "info":
		return LevelInfo, nil
	case "warn", "warning":
		return LevelWarn, nil
	case "error", "fatal", "panic":
		return LevelError, nil
	}
	return 0, fmt.Errorf("logging: unknown level %q (want debug, info, warn or error)", s)
}

// Discard returns a Logger that writes nothing; for tests and benchmarks.
func Discard() Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return &entry{e: logrus.NewEntry(l)}
}

type entry struct {
	e *logrus.Entry
	// fast formats and buffers lines without logrus (nil for Discard).
	fast *fastFormat
	// prefixBuf is e.Data formatted for fast, made once by prefix.
	prefixOnce sync.Once
	prefixBuf  []byte
	// funcField: With was given a function value, which logrus left out and noted in e's unexported error; lines
	// are then logged through e.WithFields, which carries that note.
	funcField bool
}

func (l *entry) Debug(msg string, kv ...any) { l.log(logrus.DebugLevel, msg, kv) }
func (l *entry) Info(msg string, kv ...any)  { l.log(logrus.InfoLevel, msg, kv) }
func (l *entry) Warn(msg string, kv ...any)  { l.log(logrus.WarnLevel, msg, kv) }
func (l *entry) Error(msg string, kv ...any) { l.log(logrus.ErrorLevel, msg, kv) }

func (l *entry) With(kv ...any) Logger {
	f, hasFunc := fields(kv)
	return &entry{e: l.e.WithFields(f), fast: l.fast, funcField: l.funcField || hasFunc}
}

func (l *entry) Enabled(level Level) bool { return l.e.Logger.IsLevelEnabled(toLogrus(level)) }

// log writes one line. With kv, it builds the line's fields once (the logger's With fields plus kv) and logs a
// fresh Entry holding them, instead of building a map from kv and having Entry.WithFields copy both into a second
// one: on the proxies' per-request lines that copy was a measurable share of the CPU.
func (l *entry) log(level logrus.Level, msg string, kv []any) {
	if !l.e.Logger.IsLevelEnabled(level) {
		return
	}
	if l.logFast(level, msg, kv) {
		return
	}
	defer l.flushUrgent(level)
	if len(kv) == 0 {
		l.e.Log(level, msg)
		return
	}
	f := make(logrus.Fields, len(l.e.Data)+(len(kv)+1)/2)
	for k, v := range l.e.Data {
		f[k] = v
	}
	if addFields(f, kv) || l.funcField {
		// Rare: let logrus drop function values and report them in logrus_error, as it always did.
		l.e.WithFields(f).Log(level, msg)
		return
	}
	e := logrus.NewEntry(l.e.Logger)
	e.Data = f
	e.Log(level, msg)
}

// flushUrgent makes warnings and errors written through logrus reach the output at once.
func (l *entry) flushUrgent(level logrus.Level) {
	if l.fast != nil && level <= logrus.WarnLevel {
		_ = l.fast.out.Flush()
	}
}

func fields(kv []any) (logrus.Fields, bool) {
	f := make(logrus.Fields, (len(kv)+1)/2)
	hasFunc := addFields(f, kv)
	return f, hasFunc
}

// addFields adds the pairs of kv to f and reports whether a value is a function (or a pointer to one), which
// logrus refuses as a field: Entry.WithFields leaves such a field out and says so in the line's logrus_error.
func addFields(f logrus.Fields, kv []any) (hasFunc bool) {
	for i := 0; i < len(kv); i += 2 {
		key, ok := kv[i].(string)
		if !ok {
			key = fmt.Sprint(kv[i])
		}
		if i+1 >= len(kv) {
			f[key] = "(missing)"
			break
		}
		v := kv[i+1]
		switch x := v.(type) {
		case error:
			v = x.Error()
		case time.Duration:
			v = FormatDuration(x) // with its unit, in JSON too (logrus would write nanoseconds)
		}
		hasFunc = hasFunc || isFunc(v)
		f[key] = v
	}
	return hasFunc
}

// isFunc reports whether v is a function or a pointer to one.
func isFunc(v any) bool {
	switch v.(type) {
	case string, int, int64, uint64, bool, float64, time.Duration, time.Time:
		return false // the common cases, without reflection
	}
	t := reflect.TypeOf(v)
	return t != nil && (t.Kind() == reflect.Func || t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Func)
}

func toLogrus(l Level) logrus.Level {
	switch l {
	case LevelDebug:
		return logrus.DebugLevel
	case LevelWarn:
		return logrus.WarnLevel
	case LevelError:
		return logrus.ErrorLevel
	}
	return logrus.InfoLevel
}

// StdLogger adapts l to a *log.Logger (for http.Server.ErrorLog): each line is written at level with component set.
func StdLogger(l Logger, level Level, component string) *log.Logger {
	return log.New(&lineWriter{l: l.With(FieldComponent, component), level: level}, "", 0)
}

type lineWriter struct {
	l     Logger
	level Level
}

func (w *lineWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	switch w.level {
	case LevelDebug:
		w.l.Debug(msg)
	case LevelInfo:
		w.l.Info(msg)
	case LevelWarn:
		w.l.Warn(msg)
	default:
		w.l.Error(msg)
	}
	return len(p), nil
}
