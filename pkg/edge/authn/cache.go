package authn

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

const (
	cacheSize = 10000
	cacheTTL  = time.Minute
)

// tokenCache remembers the outcome of verifying a token (its identity, or the Forbidden error its claims earn), so a
// client that sends the same token on every request pays for the signature check once a minute. Entries are keyed by
// the SHA-256 of the token, so the cache holds no tokens and bounded memory; least recently used entries go first.
type tokenCache struct {
	mu  sync.Mutex
	ll  *list.List                 // guarded by mu; front = most recently used; values are *cacheEntry
	idx map[[32]byte]*list.Element // guarded by mu
	max int
}

type cacheEntry struct {
	key   [32]byte
	id    Identity
	err   *Error // a Forbidden outcome of the claims, or nil
	gen   uint64 // the key set's generation when the token was verified; other generations ignore the entry
	until time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{ll: list.New(), idx: make(map[[32]byte]*list.Element), max: max}
}

func tokenKey(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// get returns the live entry for key at now.
func (c *tokenCache) get(key [32]byte, now time.Time) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.idx[key]
	if !ok {
		return cacheEntry{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.until) {
		c.ll.Remove(el)
		delete(c.idx, key)
		return cacheEntry{}, false
	}
	c.ll.MoveToFront(el)
	return *e, true
}

// put stores e until min(expiry, now+cacheTTL).
func (c *tokenCache) put(e cacheEntry, expiry, now time.Time) {
	e.until = now.Add(cacheTTL)
	if expiry.Before(e.until) {
		e.until = expiry
	}
	if !now.Before(e.until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.idx[e.key]; ok {
		*el.Value.(*cacheEntry) = e
		c.ll.MoveToFront(el)
		return
	}
	c.idx[e.key] = c.ll.PushFront(&e)
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.idx, last.Value.(*cacheEntry).key)
	}
}

// len returns the number of entries (tests).
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
