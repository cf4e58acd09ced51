package conncache

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// fakeConn counts its Close calls.
type fakeConn struct {
	name   string
	closes atomic.Int32
}

func (f *fakeConn) Close() error {
	if f.closes.Add(1) > 1 {
		return errors.New("closed twice")
	}
	return nil
}

func dialer(made *[]*fakeConn, mu *sync.Mutex, name string) func() (*fakeConn, error) {
	return func() (*fakeConn, error) {
		mu.Lock()
		defer mu.Unlock()
		c := &fakeConn{name: name}
		*made = append(*made, c)
		return c, nil
	}
}

func TestSharedThenExpired(t *testing.T) {
	t.Parallel()
	var made []*fakeConn
	var mu sync.Mutex
	sizes := make(chan int, 16)
	c := New[string, *fakeConn](Config{Idle: 20 * time.Millisecond, OnSize: func(n int) { sizes <- n }})
	a, relA, err := c.Get("k", dialer(&made, &mu, "one"))
	if err != nil {
		t.Fatal(err)
	}
	b, relB, _ := c.Get("k", dialer(&made, &mu, "two"))
	if a != b || len(made) != 1 {
		t.Fatalf("two users of one key got %v and %v (%d dialled)", a.name, b.name, len(made))
	}
	relA()
	relA() // idempotent: b is still in use
	time.Sleep(40 * time.Millisecond)
	if a.closes.Load() != 0 || c.Len() != 1 {
		t.Fatalf("closed while in use: closes %d, len %d", a.closes.Load(), c.Len())
	}
	relB()
	testutil.Eventually(t, "the idle connection to close", func() bool { return a.closes.Load() == 1 && c.Len() == 0 })
	if got := []int{<-sizes, <-sizes}; got[0] != 1 || got[1] != 0 {
		t.Errorf("OnSize saw %v, want [1 0]", got)
	}
}

func TestReuseCancelsExpiry(t *testing.T) {
	t.Parallel()
	var made []*fakeConn
	var mu sync.Mutex
	c := New[string, *fakeConn](Config{Idle: 30 * time.Millisecond})
	a, rel, _ := c.Get("k", dialer(&made, &mu, "one"))
	rel()
	b, rel2, _ := c.Get("k", dialer(&made, &mu, "two")) // before the timer fires
	time.Sleep(60 * time.Millisecond)
	if a != b || a.closes.Load() != 0 {
		t.Fatalf("a reused connection was closed by its old timer (closes %d)", a.closes.Load())
	}
	rel2()
	testutil.Eventually(t, "expiry after the last use", func() bool { return a.closes.Load() == 1 })
}

func TestBoundEvictsIdleOrRefuses(t *testing.T) {
	t.Parallel()
	var made []*fakeConn
	var mu sync.Mutex
	c := New[int, *fakeConn](Config{Idle: time.Hour, Max: 2})
	c1, rel1, _ := c.Get(1, dialer(&made, &mu, "1"))
	_, rel2, _ := c.Get(2, dialer(&made, &mu, "2"))
	if _, _, err := c.Get(3, dialer(&made, &mu, "3")); !errors.Is(err, ErrFull) {
		t.Fatalf("full and busy: %v, want ErrFull", err)
	}
	rel1()
	if _, _, err := c.Get(3, dialer(&made, &mu, "3")); err != nil {
		t.Fatalf("full with an idle connection: %v", err)
	}
	if c1.closes.Load() != 1 || c.Len() != 2 {
		t.Fatalf("the idle connection was not evicted: closes %d, len %d", c1.closes.Load(), c.Len())
	}
	rel2()
}

func TestDialErrorCachesNothing(t *testing.T) {
	t.Parallel()
	c := New[string, *fakeConn](Config{Idle: time.Hour})
	boom := errors.New("boom")
	if _, _, err := c.Get("k", func() (*fakeConn, error) { return nil, boom }); !errors.Is(err, boom) || c.Len() != 0 {
		t.Fatalf("Get = %v, len %d", err, c.Len())
	}
}

func TestCloseClosesEverything(t *testing.T) {
	t.Parallel()
	var made []*fakeConn
	var mu sync.Mutex
	c := New[string, *fakeConn](Config{Idle: time.Millisecond})
	_, relA, _ := c.Get("a", dialer(&made, &mu, "a"))
	_, _, _ = c.Get("b", dialer(&made, &mu, "b")) // still in use at Close
	relA()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range made {
		if m.closes.Load() != 1 {
			t.Errorf("%s closed %d times, want once", m.name, m.closes.Load())
		}
	}
	if _, _, err := c.Get("a", dialer(&made, &mu, "a")); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
}
