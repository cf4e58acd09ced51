package grpcrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// wireMessages frames payloads of the given sizes as gRPC does on the wire and returns the bytes and where each
// message ends.
func wireMessages(sizes []int) (wire []byte, ends []int64) {
	for i, n := range sizes {
		var prefix [msgPrefixLen]byte
		binary.BigEndian.PutUint32(prefix[1:], uint32(n))
		wire = append(wire, prefix[:]...)
		wire = append(wire, body(i, n)...)
		ends = append(ends, int64(len(wire)))
	}
	return wire, ends
}

// chunkReader returns its bytes in the chunk sizes next gives, as a client's DATA frames arrive.
type chunkReader struct {
	data []byte
	next func() int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), c.next())
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkReader) Close() error { return nil }

func newPaced(r io.ReadCloser) *pacedBody {
	req := PaceBody(&http.Request{Body: r}, DefaultMaxRecvMsgSize)
	return pacedFrom(req.Context())
}

// TestPacedBodyFollowsFraming reads messages of random sizes (empty ones, prefixes split across frames, messages
// over many frames) in random frame sizes: every read must end at a full buffer, the body's end or a message that
// ended in it, the bytes must come through unchanged, and the body must find every message's end.
func TestPacedBodyFollowsFraming(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		sizes := make([]int, 1+rng.IntN(60))
		for i := range sizes {
			switch rng.IntN(4) {
			case 0:
				sizes[i] = 0
			case 1:
				sizes[i] = rng.IntN(20)
			case 2:
				sizes[i] = rng.IntN(2000)
			default:
				sizes[i] = rng.IntN(70000)
			}
		}
		wire, ends := wireMessages(sizes)
		frame := 1 + rng.IntN(3000)
		b := newPaced(&chunkReader{data: wire, next: func() int { return 1 + rng.IntN(frame) }})
		var got []byte
		taken := 0
		buf := make([]byte, 16<<10)
		for {
			n, err := b.Read(buf)
			got = append(got, buf[:n]...)
			endedHere := false
			for _, e := range ends {
				if e > int64(len(got)-n) && e <= int64(len(got)) {
					endedHere = true
				}
			}
			if err == nil && n < len(buf) && !endedHere {
				t.Fatalf("round %d: a read of %d bytes at %d returned with no message ended and room left", round, n, len(got)-n)
			}
			// Relay takes every message that is complete.
			for taken < len(ends) && ends[taken] <= int64(len(got)) {
				b.taken()
				if b.done != ends[taken] {
					t.Fatalf("round %d: message %d taken, body thinks it ended at %d, want %d", round, taken, b.done, ends[taken])
				}
				taken++
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, wire) {
			t.Fatalf("round %d: %d bytes read, want the %d sent unchanged", round, len(got), len(wire))
		}
		if taken != len(ends) {
			t.Fatalf("round %d: %d of %d messages seen", round, taken, len(ends))
		}
	}
}

// readAsync reads once from b on another goroutine.
func readAsync(b *pacedBody, buf []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := b.Read(buf)
		done <- err
	}()
	return done
}

// assertWaits checks that the read behind done has not returned, then calls release and checks that it returns.
func assertWaits(t *testing.T, done <-chan error, release func(), wantErr error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("read returned (%v) while the call held enough unread messages", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case err := <-done:
		if !errors.Is(err, wantErr) {
			t.Fatalf("read returned %v, want %v", err, wantErr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still waiting after it was released")
	}
}

func TestPacedBodyWaitsForRelay(t *testing.T) {
	t.Parallel()
	one := func() int { return 15 } // one 10-byte message per frame
	t.Run("messages", func(t *testing.T) {
		t.Parallel()
		var wire []byte
		for range pacedMaxMessages + 2 {
			w, _ := wireMessages([]int{10})
			wire = append(wire, w...)
		}
		b := newPaced(&chunkReader{data: wire, next: one})
		buf := make([]byte, 16<<10)
		for i := range pacedMaxMessages {
			if n, err := b.Read(buf); n != 15 || err != nil {
				t.Fatalf("read %d: %d, %v; want one message", i, n, err)
			}
		}
		assertWaits(t, readAsync(b, buf), b.taken, nil)
	})
	t.Run("bytes", func(t *testing.T) {
		t.Parallel()
		// The first message ends at a frame's end, so the read that ends it does not take the second one too.
		wire, ends := wireMessages([]int{pacedMaxBytes - msgPrefixLen, 10})
		b := newPaced(&chunkReader{data: wire, next: func() int { return 16 << 10 }})
		buf := make([]byte, 16<<10)
		for read := int64(0); read < ends[0]; {
			n, err := b.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			read += int64(n)
		}
		assertWaits(t, readAsync(b, buf), b.taken, nil)
	})
	t.Run("close", func(t *testing.T) {
		t.Parallel()
		wire, _ := wireMessages(make([]int, pacedMaxMessages+1))
		b := newPaced(&chunkReader{data: wire, next: func() int { return msgPrefixLen }})
		buf := make([]byte, 16<<10)
		for range pacedMaxMessages {
			if _, err := b.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
		assertWaits(t, readAsync(b, buf), func() { _ = b.Close() }, http.ErrBodyReadAfterClose)
	})
	t.Run("prefix over the limit", func(t *testing.T) {
		t.Parallel()
		wire, _ := wireMessages([]int{10})
		wire = append(wire, 0, 0, 0x40, 0, 1) // claims 4 MiB + 1
		wire = append(wire, make([]byte, 64<<10)...)
		b := newPaced(&chunkReader{data: wire, next: func() int { return 4 }})
		buf := make([]byte, 16<<10)
		got := 0
		for got < 20 { // the whole message and the oversized prefix
			n, err := b.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
		if got != 20 {
			t.Fatalf("read %d bytes, want the reading to stop right after the oversized prefix (20)", got)
		}
		// The relay takes the whole message; gRPC refuses the next, so nothing past its prefix is read.
		b.taken()
		assertWaits(t, readAsync(b, buf), func() { _ = b.Close() }, http.ErrBodyReadAfterClose)
	})
	t.Run("incomplete message never waits", func(t *testing.T) {
		t.Parallel()
		// Three times pacedMaxBytes of one message, nothing taken: the call needs every byte to go on.
		wire, _ := wireMessages([]int{3 * pacedMaxBytes})
		b := newPaced(&chunkReader{data: wire, next: func() int { return 100 }})
		done := make(chan error, 1)
		go func() {
			// Up to the message's end, not the body's: once the message is whole, reading on waits for the relay.
			got := make([]byte, len(wire))
			_, err := io.ReadFull(b, got)
			if err == nil && !bytes.Equal(got, wire) {
				err = errors.New("the bytes changed")
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("reading one incomplete message waited for the relay")
		}
	})
}

// countingPool is gRPC's default buffer pool, counting the 16 KiB buffers ServeHTTP's reader takes that are not
// back yet, and the most there were.
type countingPool struct {
	mem.BufferPool
	mu   sync.Mutex
	out  map[*[]byte]bool
	most int
}

func (p *countingPool) Get(n int) *[]byte {
	b := p.BufferPool.Get(n)
	if n == 16<<10 {
		p.mu.Lock()
		p.out[b] = true
		p.most = max(p.most, len(p.out))
		p.mu.Unlock()
	}
	return b
}

func (p *countingPool) Put(b *[]byte) {
	p.mu.Lock()
	delete(p.out, b)
	p.mu.Unlock()
	p.BufferPool.Put(b)
}

func (p *countingPool) counts() (out, most int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.out), p.most
}

// TestPacedBodyBoundsServeHTTPBuffers trickles DATA frames to a backend that reads nothing, through
// grpc.Server.ServeHTTP behind PaceBody: 1,000 messages of 1,000 bytes, one per frame; one message of 100 KB in
// frames of 100 bytes; and two messages of 300 KB followed by a prefix claiming 2 GiB and 4 MiB, in 16 KiB frames
// (the relay then waits on the backend with no whole message queued, so only the receive limit can stop the
// reading). Unpaced, gRPC's reader queued a buffer per frame: about 870, 1,000 and 290 buffers of 16 KiB.
func TestPacedBodyBoundsServeHTTPBuffers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		sizes []int
		frame int
		tail  int // bytes sent in 16 KiB frames after a prefix over the receive limit
	}{
		{"small messages", func() []int {
			s := make([]int, 1000)
			for i := range s {
				s[i] = 1000 - msgPrefixLen
			}
			return s
		}(), 1000, 0},
		{"one message", []int{100000 - msgPrefixLen}, 100, 0},
		{"message over the limit", []int{300000 - msgPrefixLen, 300000 - msgPrefixLen}, 16 << 10, 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The backend's windows are fixed (no growth from bandwidth estimates), so it takes 64 KiB and stops.
			stuck := grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10),
				grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
					<-ss.Context().Done()
					return ss.Context().Err()
				}))
			backendAddr := serve(t, stuck, nil)
			pool := &countingPool{BufferPool: mem.DefaultBufferPool(), out: map[*[]byte]bool{}}
			e := &relayEnv{relayErrs: make(chan error, 1)}
			addr := e.relayServer(t, backendAddr, Options{}, true, experimental.BufferPool(pool))

			wire, _ := wireMessages(tc.sizes)
			pr, pw := io.Pipe()
			ctx, cancel := context.WithCancel(callCtx(t))
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/stuck.Service/Call", pr)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("TE", "trailers")
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			defer tr.CloseIdleConnections()
			go func() {
				resp, err := tr.RoundTrip(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			}()
			// The writer may block for good (the client's window closes), so it runs on its own.
			go func() {
				for off := 0; off < len(wire); off += tc.frame {
					if _, err := pw.Write(wire[off:min(off+tc.frame, len(wire))]); err != nil {
						return
					}
					// A trickle: each frame arrives on its own, not coalesced with the next in net/http's buffer.
					time.Sleep(200 * time.Microsecond)
				}
				if tc.tail == 0 {
					return
				}
				if _, err := pw.Write([]byte{0, 0x7f, 0xff, 0xff, 0xff}); err != nil {
					return
				}
				frame := make([]byte, 16<<10)
				for range tc.tail / len(frame) {
					if _, err := pw.Write(frame); err != nil {
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()
			// Wait until the relay has settled: no change in the count of queued buffers for 300 ms.
			testutil.Settled(func() int64 { out, _ := pool.counts(); return int64(out) }, 300*time.Millisecond, 10*time.Second)
			out, most := pool.counts()
			const bound = pacedMaxMessages + 16
			if most > bound {
				t.Errorf("ServeHTTP's reader held up to %d buffers of 16 KiB (%d at the end), want at most %d", most, out, bound)
			}
			t.Logf("buffers of 16 KiB held: at most %d, at the end %d", most, out)
			cancel()
			_ = pw.CloseWithError(errors.New("test over"))
			select {
			case <-e.relayErrs:
			case <-time.After(10 * time.Second):
				t.Fatal("the relay did not end after the client went away")
			}
		})
	}
}

// TestPacedBodyWaitsAndResumes sends 2 MB of messages through ServeHTTP behind PaceBody to a backend that reads
// nothing yet: the client must come to a stop (the paced body stopped reading, so its window closed; unpaced,
// gRPC would have read everything), and once the backend reads, every message must arrive.
func TestPacedBodyWaitsAndResumes(t *testing.T) {
	t.Parallel()
	backend := &testutil.GatedService{}
	open := backend.Arm()
	defer open()
	backendAddr := serve(t, grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10)),
		func(s *grpc.Server) { testpb.RegisterTestServiceServer(s, backend) })
	e := &relayEnv{relayErrs: make(chan error, 1)}
	client := testpb.NewTestServiceClient(dial(t, e.relayServer(t, backendAddr, Options{}, true)))
	stream, err := client.StreamingInputCall(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	const messages, size = 2000, 995
	var sent atomic.Int64
	sendErr := make(chan error, 1)
	go func() {
		for i := range messages {
			if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: body(i, size)}}); err != nil {
				sendErr <- err
				return
			}
			sent.Add(1)
		}
		sendErr <- nil
	}()
	last := testutil.Settled(sent.Load, 300*time.Millisecond, 10*time.Second) // the client stopped
	if last >= messages {
		t.Fatalf("the client sent all %d messages to a backend that reads nothing: the body was not paced", messages)
	}
	t.Logf("the client stopped after %d of %d messages", last, messages)
	open()
	if err := <-sendErr; err != nil {
		t.Fatalf("sending after the backend began to read: %v", err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetAggregatedPayloadSize(); got != messages*size {
		t.Errorf("the backend received %d bytes, want %d", got, messages*size)
	}
	if err := <-e.relayErrs; err != nil {
		t.Errorf("Relay returned %v", err)
	}
}
