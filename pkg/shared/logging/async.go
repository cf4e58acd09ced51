package logging

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Buffering of a Logger's output (see asyncWriter).
const (
	flushAt   = 64 << 10 // bytes buffered that make the writer flush at once
	dropAbove = 4 << 20  // bytes buffered past which new lines are dropped (and counted) instead of growing memory
)

// asyncWriter batches log lines: a line is appended to a buffer, which is written to out every after the first
// line since the last write, or at once when it holds flushAt bytes (every 0: each line is written at once). A request therefore does not pay a write(2)
// for its log line. If out falls so far behind that dropAbove bytes wait, new lines are dropped and counted
// (Dropped) rather than blocking requests or growing without bound. It owns no goroutine: the delayed flush runs on
// a time.AfterFunc timer.
type asyncWriter struct {
	out   io.Writer
	every time.Duration

	mu      sync.Mutex // guards buf and armed
	buf     []byte
	armed   bool
	timer   *time.Timer
	wmu     sync.Mutex // serialises writes to out; guards spare
	spare   []byte
	dropped atomic.Uint64
}

func newAsyncWriter(out io.Writer, every time.Duration) *asyncWriter {
	w := &asyncWriter{out: out, every: every}
	w.timer = time.AfterFunc(time.Hour, func() { _ = w.Flush() })
	w.timer.Stop()
	return w
}

// Write buffers p, which must be whole lines.
func (w *asyncWriter) Write(p []byte) (int, error) {
	if w.every <= 0 {
		w.wmu.Lock()
		defer w.wmu.Unlock()
		return w.out.Write(p)
	}
	w.mu.Lock()
	if len(w.buf)+len(p) > dropAbove {
		w.mu.Unlock()
		w.dropped.Add(1)
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	full := len(w.buf) >= flushAt
	if !full && !w.armed {
		w.armed = true
		w.timer.Reset(w.every)
	}
	w.mu.Unlock()
	if full && w.wmu.TryLock() {
		// A write already in progress (a stalled output) is not waited for: the lines stay buffered, up to
		// dropAbove, and that write re-arms the timer when it returns.
		defer w.wmu.Unlock()
		return len(p), w.flushLocked()
	}
	return len(p), nil
}

// Flush writes everything buffered, waiting for a write in progress.
func (w *asyncWriter) Flush() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.flushLocked()
}

// flushLocked writes what is buffered; w.wmu is held.
func (w *asyncWriter) flushLocked() error {
	w.mu.Lock()
	w.buf, w.spare = w.spare[:0], w.buf
	w.armed = false
	w.mu.Unlock()
	if len(w.spare) == 0 {
		return nil
	}
	_, err := w.out.Write(w.spare)
	if cap(w.spare) > 4*flushAt {
		w.spare = nil // after a burst, give the memory back
	}
	w.mu.Lock()
	if len(w.buf) > 0 && !w.armed { // lines came in while out was being written
		w.armed = true
		w.timer.Reset(w.every)
	}
	w.mu.Unlock()
	return err
}

// Flush writes the lines a Logger from New still holds in its buffer; call it before the process exits. Other
// Loggers have nothing to flush.
func Flush(l Logger) error {
	if e, ok := l.(*entry); ok && e.fast != nil {
		return e.fast.out.Flush()
	}
	return nil
}

// Dropped reports how many lines a Logger from New dropped because its output could not keep up (0 for others).
func Dropped(l Logger) uint64 {
	if e, ok := l.(*entry); ok && e.fast != nil {
		return e.fast.out.dropped.Load()
	}
	return 0
}

// prefix returns the logger's With fields formatted for f, computed once per entry.
func (l *entry) prefix(f *fastFormat) []byte {
	l.prefixOnce.Do(func() {
		keys := make([]string, 0, len(l.e.Data))
		for k := range l.e.Data {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var b []byte
		for _, k := range keys {
			b = f.key(b, k)
			switch v := l.e.Data[k].(type) {
			case string:
				b = f.str(b, v)
			default:
				if f.json {
					if enc, err := json.Marshal(v); err == nil {
						b = append(b, enc...)
						continue
					}
				}
				b = f.str(b, fmt.Sprint(v))
			}
		}
		l.prefixBuf = b
	})
	return l.prefixBuf
}

// logFast writes a line whose values are all of common simple types without logrus, and reports whether it could.
func (l *entry) logFast(level logrus.Level, msg string, kv []any) bool {
	if l.fast == nil || l.funcField || len(kv)%2 != 0 {
		return false
	}
	for i := 0; i < len(kv); i += 2 {
		if _, ok := kv[i].(string); !ok {
			return false
		}
		switch kv[i+1].(type) {
		case string, int, int64, int32, uint64, uint32, bool, time.Duration, error, nil:
		default:
			return false
		}
	}
	ln := Begin(l, fromLogrus(level), msg)
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		switch v := kv[i+1].(type) {
		case string:
			ln.Str(k, v)
		case int:
			ln.Int(k, int64(v))
		case int64:
			ln.Int(k, v)
		case int32:
			ln.Int(k, int64(v))
		case uint32:
			ln.Int(k, int64(v))
		case uint64:
			if v > 1<<63-1 {
				ln.Str(k, fmt.Sprint(v))
			} else {
				ln.Int(k, int64(v))
			}
		case bool:
			ln.Bool(k, v)
		case time.Duration:
			ln.Dur(k, v)
		case error:
			ln.Str(k, v.Error())
		case nil:
			ln.Null(k)
		}
	}
	ln.Write()
	return true
}

func fromLogrus(l logrus.Level) Level {
	switch {
	case l >= logrus.DebugLevel:
		return LevelDebug
	case l == logrus.InfoLevel:
		return LevelInfo
	case l == logrus.WarnLevel:
		return LevelWarn
	}
	return LevelError
}
