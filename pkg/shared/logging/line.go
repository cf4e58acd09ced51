package logging

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Line is one log line built field by field without maps or interface values: the proxies' per-request lines,
// which are written once per request and must cost little. Begin returns nil when the level is off; every method
// of a nil *Line does nothing, so callers need no checks. A Line must not be used after Write.
//
// With a Logger from New the line is formatted straight into a pooled buffer, in the Logger's format (the fields a
// logrus line has: time, level, msg, the logger's With fields, then the line's own, in order), and handed to the
// Logger's output. With any other Logger the fields are collected and passed to its method for the level.
type Line struct {
	e     *entry // nil: fallback to other
	other Logger
	level Level
	msg   string
	buf   []byte
	kv    []any
}

var linePool = sync.Pool{New: func() any { return &Line{buf: make([]byte, 0, 512)} }}

// Begin starts a line at level with message msg, or returns nil when l would not write it.
func Begin(l Logger, level Level, msg string) *Line {
	if !l.Enabled(level) {
		return nil
	}
	ln := linePool.Get().(*Line)
	ln.level, ln.msg = level, msg
	if e, ok := l.(*entry); ok && e.fast != nil {
		ln.e = e
		ln.buf = e.fast.begin(ln.buf[:0], level, msg, e)
		return ln
	}
	ln.other = l
	return ln
}

// Str adds a string field.
func (ln *Line) Str(key, value string) *Line {
	if ln == nil {
		return nil
	}
	if ln.e == nil {
		ln.kv = append(ln.kv, key, value)
		return ln
	}
	ln.buf = ln.e.fast.key(ln.buf, key)
	ln.buf = ln.e.fast.str(ln.buf, value)
	return ln
}

// StrIf adds a string field unless value is empty.
func (ln *Line) StrIf(key, value string) *Line {
	if value == "" {
		return ln
	}
	return ln.Str(key, value)
}

// Int adds an integer field.
func (ln *Line) Int(key string, value int64) *Line {
	if ln == nil {
		return nil
	}
	if ln.e == nil {
		ln.kv = append(ln.kv, key, value)
		return ln
	}
	ln.buf = ln.e.fast.key(ln.buf, key)
	ln.buf = strconv.AppendInt(ln.buf, value, 10)
	return ln
}

// Bool adds a boolean field.
func (ln *Line) Bool(key string, value bool) *Line {
	if ln == nil {
		return nil
	}
	if ln.e == nil {
		ln.kv = append(ln.kv, key, value)
		return ln
	}
	ln.buf = ln.e.fast.key(ln.buf, key)
	ln.buf = strconv.AppendBool(ln.buf, value)
	return ln
}

// Null adds a field without value: null in JSON, "<nil>" in text (as logrus writes nil).
func (ln *Line) Null(key string) *Line {
	if ln == nil {
		return nil
	}
	if ln.e == nil {
		ln.kv = append(ln.kv, key, nil)
		return ln
	}
	ln.buf = ln.e.fast.key(ln.buf, key)
	if ln.e.fast.json {
		ln.buf = append(ln.buf, "null"...)
	} else {
		ln.buf = append(ln.buf, "<nil>"...)
	}
	return ln
}

// Dur adds a duration field, in both formats a string with its unit (see FormatDuration): "1.5ms".
func (ln *Line) Dur(key string, d time.Duration) *Line {
	if ln == nil {
		return nil
	}
	if ln.e == nil {
		ln.kv = append(ln.kv, key, d)
		return ln
	}
	ln.buf = ln.e.fast.key(ln.buf, key)
	if ln.e.fast.json {
		ln.buf = append(ln.buf, '"')
		ln.buf = appendDuration(ln.buf, d)
		ln.buf = append(ln.buf, '"')
	} else {
		var tmp [32]byte
		ln.buf = ln.e.fast.str(ln.buf, string(appendDuration(tmp[:0], d)))
	}
	return ln
}

// FormatDuration is how log lines write a duration, in text and JSON alike: a decimal number with at most three
// decimals (truncated, trailing zeros dropped) and the largest unit of ns, µs, ms and s it reaches: "850ns",
// "12.5µs", "128.415ms", "3.2s", "7384s". Go's time.ParseDuration reads it back.
func FormatDuration(d time.Duration) string { return string(appendDuration(nil, d)) }

func appendDuration(b []byte, d time.Duration) []byte {
	n := uint64(d)
	if d < 0 {
		b = append(b, '-')
		n = -n
	}
	unit, div := "ns", uint64(1)
	switch {
	case n >= uint64(time.Second):
		unit, div = "s", uint64(time.Second)
	case n >= uint64(time.Millisecond):
		unit, div = "ms", uint64(time.Millisecond)
	case n >= uint64(time.Microsecond):
		unit, div = "µs", uint64(time.Microsecond)
	}
	b = strconv.AppendUint(b, n/div, 10)
	if frac := n % div * 1000 / div; frac != 0 {
		digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
		end := 3
		for digits[end-1] == '0' {
			end--
		}
		b = append(append(b, '.'), digits[:end]...)
	}
	return append(b, unit...)
}

// Write ends the line and writes it. Errors and warnings reach the output before Write returns; other lines may
// wait in the output's buffer for a few milliseconds (see Flush).
func (ln *Line) Write() {
	if ln == nil {
		return
	}
	if ln.e == nil {
		switch ln.level {
		case LevelDebug:
			ln.other.Debug(ln.msg, ln.kv...)
		case LevelInfo:
			ln.other.Info(ln.msg, ln.kv...)
		case LevelWarn:
			ln.other.Warn(ln.msg, ln.kv...)
		default:
			ln.other.Error(ln.msg, ln.kv...)
		}
	} else {
		ln.buf = ln.e.fast.end(ln.buf)
		ln.e.fast.write(ln.buf, ln.level >= LevelWarn)
	}
	ln.reset()
}

func (ln *Line) reset() {
	if cap(ln.buf) > 64<<10 {
		ln.buf = make([]byte, 0, 512) // do not keep a huge buffer in the pool
	}
	clear(ln.kv)
	ln.e, ln.other, ln.buf, ln.kv = nil, nil, ln.buf[:0], ln.kv[:0]
	linePool.Put(ln)
}

// fastFormat formats lines like the logrus formatter New configures, for Line and for entry.log's common case.
type fastFormat struct {
	json bool
	out  *asyncWriter
}

// begin writes the time, level, message and the With fields of e.
func (f *fastFormat) begin(b []byte, level Level, msg string, e *entry) []byte {
	now := time.Now()
	if f.json {
		b = append(b, `{"time":"`...)
		b = now.AppendFormat(b, time.RFC3339)
		b = append(b, `","level":"`...)
		b = append(b, levelName(level)...)
		b = append(b, `","msg":`...)
		b = appendJSONString(b, msg)
	} else {
		b = append(b, `time="`...)
		b = now.AppendFormat(b, time.RFC3339)
		b = append(b, `" level=`...)
		b = append(b, levelName(level)...)
		b = append(b, ` msg=`...)
		b = f.str(b, msg)
	}
	return append(b, e.prefix(f)...)
}

// key starts a field.
func (f *fastFormat) key(b []byte, k string) []byte {
	if f.json {
		b = append(b, ',')
		b = appendJSONString(b, k)
		return append(b, ':')
	}
	b = append(b, ' ')
	b = append(b, k...)
	return append(b, '=')
}

// str writes a string value: a JSON string, or in text the value itself, quoted when logrus would quote it.
func (f *fastFormat) str(b []byte, s string) []byte {
	if f.json {
		return appendJSONString(b, s)
	}
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func (f *fastFormat) end(b []byte) []byte {
	if f.json {
		b = append(b, '}')
	}
	return append(b, '\n')
}

func (f *fastFormat) write(b []byte, urgent bool) {
	_, _ = f.out.Write(b)
	if urgent {
		_ = f.out.Flush()
	}
}

func levelName(l Level) string {
	switch l {
	case LevelDebug:
		return "debug"
	case LevelWarn:
		return "warning"
	case LevelError:
		return "error"
	}
	return "info"
}

// needsQuoting is logrus's text rule: anything but letters, digits and -._/@^+ is quoted.
func needsQuoting(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '/' || c == '@' || c == '^' || c == '+') {
			return true
		}
	}
	return false
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
