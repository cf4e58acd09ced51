// Package conncache keeps one long-lived connection per key (a gRPC ClientConn to a kedge, or to an adhoc
// destination), shared by every concurrent user of that key and closed once nobody has used it for an idle timeout.
// kedge's gRPC proxy (adhoc destinations, which clients name, so the cache is bounded) and winch's gRPC forwarder
// (one connection per kedge) both use it.
package conncache

import (
	"errors"
	"io"
	"sync"
	"time"
)

var (
	// ErrClosed is returned by Get after Close.
	ErrClosed = errors.New("conncache: closed")
	// ErrFull is returned by Get for a new key when the cache holds Max connections and every one is in use.
	ErrFull = errors.New("conncache: every cached connection is in use")
)

// Config configures a Cache.
type Config struct {
	// Idle is how long a connection nobody uses is kept (required, > 0).
	Idle time.Duration
	// Max bounds the cached connections; 0 means no bound. When the cache is full, a new key takes the place of a
	// connection nobody uses, or gets ErrFull.
	Max int
	// OnSize, if set, is called with the number of cached connections whenever it changes (for a gauge). It runs
	// with the cache's lock held: it must not call the cache.
	OnSize func(n int)
}

// Cache is the connection cache. It is safe for concurrent use and owns no goroutine: idle expiry runs on
// time.AfterFunc timers, which Close stops or waits for. Connections are closed outside the lock (closing a gRPC
// connection waits for its goroutines).
type Cache[K comparable, C io.Closer] struct {
	cfg Config

	mu       sync.Mutex // guards the fields below and every entry's active, gen and timer
	closed   bool
	entries  map[K]*entry[C]
	expiring sync.WaitGroup // timers closing a connection
}

type entry[C io.Closer] struct {
	conn   C
	active int         // users holding conn
	gen    uint64      // bumped whenever the idle timer is armed or cancelled, so a stale timer does nothing
	timer  *time.Timer // armed while active == 0
}

// New returns an empty cache.
func New[K comparable, C io.Closer](cfg Config) *Cache[K, C] {
	return &Cache[K, C]{cfg: cfg, entries: make(map[K]*entry[C])}
}

// Get returns the connection for key, making it with dial when there is none, and the function that ends the
// caller's use of it (idempotent). dial runs with the cache's lock held and must not block on I/O: a gRPC
// ClientConn connects lazily.
func (c *Cache[K, C]) Get(key K, dial func() (C, error)) (C, func(), error) {
	var zero C
	var evicted *entry[C]
	defer func() {
		if evicted != nil {
			_ = evicted.conn.Close()
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return zero, nil, ErrClosed
	}
	e, ok := c.entries[key]
	if !ok {
		if c.cfg.Max > 0 && len(c.entries) >= c.cfg.Max {
			if evicted = c.evictIdleLocked(); evicted == nil {
				return zero, nil, ErrFull
			}
		}
		conn, err := dial()
		if err != nil {
			c.sizeChangedLocked()
			return zero, nil, err
		}
		e = &entry[C]{conn: conn}
		c.entries[key] = e
		c.sizeChangedLocked()
	}
	e.active++
	c.stopTimerLocked(e)
	return e.conn, sync.OnceFunc(func() { c.release(key, e) }), nil
}

// Len reports how many connections are cached.
func (c *Cache[K, C]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Close closes every cached connection, also those in use, and waits for idle timers that are closing one; later
// Gets fail with ErrClosed.
func (c *Cache[K, C]) Close() error {
	c.mu.Lock()
	c.closed = true
	entries := c.entries
	c.entries = make(map[K]*entry[C])
	for _, e := range entries {
		c.stopTimerLocked(e)
	}
	c.sizeChangedLocked()
	c.mu.Unlock()
	var errs []error
	for _, e := range entries {
		if err := e.conn.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	c.expiring.Wait()
	return errors.Join(errs...)
}

// evictIdleLocked removes one connection nobody uses and returns it for the caller to close, or nil.
func (c *Cache[K, C]) evictIdleLocked() *entry[C] {
	for key, e := range c.entries {
		if e.active > 0 {
			continue
		}
		delete(c.entries, key)
		c.stopTimerLocked(e)
		return e
	}
	return nil
}

// release ends one use of e and arms its idle timer when it was the last.
func (c *Cache[K, C]) release(key K, e *entry[C]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.active--
	if e.active > 0 || c.closed {
		return
	}
	e.gen++
	gen := e.gen
	e.timer = time.AfterFunc(c.cfg.Idle, func() { c.expire(key, e, gen) })
}

// expire closes e if it is still cached and nobody used it since the timer of generation gen was armed.
func (c *Cache[K, C]) expire(key K, e *entry[C], gen uint64) {
	c.mu.Lock()
	if c.closed || c.entries[key] != e || e.active > 0 || e.gen != gen {
		c.mu.Unlock()
		return
	}
	delete(c.entries, key)
	c.sizeChangedLocked()
	c.expiring.Add(1) // under mu and before closed is set, so Close waits for it
	c.mu.Unlock()
	defer c.expiring.Done()
	_ = e.conn.Close()
}

func (c *Cache[K, C]) stopTimerLocked(e *entry[C]) {
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

func (c *Cache[K, C]) sizeChangedLocked() {
	if c.cfg.OnSize != nil {
		c.cfg.OnSize(len(c.entries))
	}
}
