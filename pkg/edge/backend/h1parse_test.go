package backend

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// parseBoth reads raw as the answer to a request of method, once with http.ReadResponse and once with the common
// path, and reports a difference in anything a proxy uses: the status, header, framing, body, trailer and the
// bytes left for the next response. accepted is whether the common path took the response.
func parseBoth(t testing.TB, raw []byte, method string) (accepted bool) {
	t.Helper()
	req := &http.Request{Method: method}
	wbr := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
	want, wantErr := http.ReadResponse(wbr, req)

	br := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
	block := peekHeaderBlock(br)
	if block == nil {
		return false
	}
	if len(block) > len(raw) || !bytes.Equal(block, raw[:len(block)]) {
		t.Fatalf("peekHeaderBlock returned %q, not a prefix of the response", block)
	}
	var keys map[string]string
	got := parseCommon(block, req, &keys)
	if got == nil {
		return false
	}
	if wantErr != nil {
		t.Fatalf("the common path accepted %q, which net/http refuses: %v", raw, wantErr)
	}
	_, _ = br.Discard(len(block))
	setBody(got, br)

	type fields struct {
		Status           string
		StatusCode       int
		Proto            string
		ProtoMajor       int
		ProtoMinor       int
		Header           http.Header
		ContentLength    int64
		TransferEncoding []string
		Close            bool
	}
	pick := func(r *http.Response) fields {
		return fields{r.Status, r.StatusCode, r.Proto, r.ProtoMajor, r.ProtoMinor, r.Header, r.ContentLength, r.TransferEncoding, r.Close}
	}
	if g, w := pick(got), pick(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("response %q:\n got %+v\nwant %+v", raw, g, w)
	}
	if (got.Body == http.NoBody) != (want.Body == http.NoBody) {
		t.Fatalf("response %q: body NoBody %v, net/http's %v", raw, got.Body == http.NoBody, want.Body == http.NoBody)
	}
	gotBody, gotErr := io.ReadAll(got.Body)
	wantBody, wantBodyErr := io.ReadAll(want.Body)
	if !bytes.Equal(gotBody, wantBody) || (gotErr == nil) != (wantBodyErr == nil) {
		t.Fatalf("response %q: body %q (%v), net/http's %q (%v)", raw, gotBody, gotErr, wantBody, wantBodyErr)
	}
	if !reflect.DeepEqual(got.Trailer, want.Trailer) {
		t.Fatalf("response %q: trailer %v, net/http's %v", raw, got.Trailer, want.Trailer)
	}
	if gotErr == nil {
		rest, _ := io.ReadAll(br)
		wantRest, _ := io.ReadAll(wbr)
		if !bytes.Equal(rest, wantRest) {
			t.Fatalf("response %q: %q left for the next response, net/http leaves %q", raw, rest, wantRest)
		}
		if err := got.Body.Close(); err != nil {
			t.Fatalf("response %q: Close after the whole body: %v", raw, err)
		}
	}
	return true
}

// common are responses in the form backends send; the common path must take them all.
var common = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-echo-method: GET\r\nX-ECHO-PATH: /a\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Dec 2026 04:00:00 GMT\r\nContent-Length: 3\r\n\r\nno\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nHTTP/1.1 200 OK\r\n",
	"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nX-Tab:\tv\t \r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
}

// unusual are responses the common path leaves to net/http (it must not take them).
var unusual = []string{
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
	"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Bin: \x80\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
}

func TestParseCommonMatchesNetHTTP(t *testing.T) {
	for _, raw := range common {
		if !parseBoth(t, []byte(raw), http.MethodGet) {
			t.Errorf("%q: left to net/http, want it taken by the common path", raw)
		}
		parseBoth(t, []byte(raw), http.MethodHead) // a chunked answer to HEAD is left to net/http
	}
	for _, raw := range unusual {
		if parseBoth(t, []byte(raw), http.MethodGet) {
			t.Errorf("%q: taken by the common path, want it left to net/http", raw)
		}
		parseBoth(t, []byte(raw), http.MethodHead) // an answer to HEAD has no body, however it is framed
	}
}

func FuzzParseCommon(f *testing.F) {
	for _, raw := range append(append([]string{}, common...), unusual...) {
		f.Add([]byte(raw), false)
		f.Add([]byte(raw), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		parseBoth(t, raw, method)
	})
}

func TestInternKeysBounded(t *testing.T) {
	var keys map[string]string
	for i := range 3 * maxInternedKeys {
		name := fmt.Sprintf("x-key-%d", i)
		if got := internKey(name, &keys); got != fmt.Sprintf("X-Key-%d", i) {
			t.Fatalf("internKey(%q) = %q", name, got)
		}
	}
	if len(keys) != maxInternedKeys {
		t.Errorf("%d keys interned, want the table capped at %d", len(keys), maxInternedKeys)
	}
	long := strings.Repeat("a", 100)
	if got := internKey(long, &keys); got != "A"+long[1:] {
		t.Errorf("a long key: %q", got)
	}
}

// maxH1Allocs is what one GET through h1Client costs in allocations, the answer's header and body included, with
// a backend answering eight header fields (four of them not among net/http's common names). It was 29 with
// http.ReadResponse parsing every answer. Raise it only with a reason.
const maxH1Allocs = 20

// TestH1ClientAllocations locks in the allocations per request of h1Client's common path.
func TestH1ClientAllocations(t *testing.T) { // not parallel: AllocsPerRun counts the whole process
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n" +
		"Date: Sun, 06 Dec 2026 04:00:00 GMT\r\nCache-Control: no-store\r\nX-Request-Id: 0123456789abcdef\r\n" +
		"X-Ratelimit-Limit: 100\r\nX-Ratelimit-Remaining: 99\r\nX-Backend: a\r\n\r\n{}")
	// The backend reads each request's lines and answers without allocating, so that only the client counts.
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) == 2 {
					break
				}
			}
			if _, err := c.Write(answer); err != nil {
				return
			}
		}
	})
	c := newTestH1(t, Options{})
	ep := srv.Addr()
	req, err := http.NewRequest(http.MethodGet, "http://"+ep+"/api/items", nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	get := func() {
		resp, err := c.roundTrip(req, ep)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:2])
		_ = resp.Body.Close()
		if n != 2 || resp.Header.Get("X-Ratelimit-Remaining") != "99" {
			t.Fatalf("answer %d bytes, header %v", n, resp.Header)
		}
	}
	get() // the connection, and its table of header keys
	// The least of three counts: AllocsPerRun counts the whole process, and what other tests left running (a
	// closing connection, a timer) can only add to it.
	n := testing.AllocsPerRun(100, get)
	for range 2 {
		n = min(n, testing.AllocsPerRun(100, get))
	}
	t.Logf("%.1f allocations per request", n)
	// Under the race detector sync.Pool drops a quarter of what is put back, at random: two to three more here.
	limit := maxH1Allocs + 3*sharedtest.RaceExtraAllocs
	if n > float64(limit) {
		t.Errorf("%.1f allocations per request, want at most %d", n, limit)
	}
}

// onceReader returns data on its first Read and errWouldWait on every later one, counting them: a backend that
// sent one piece and went quiet.
type onceReader struct {
	data  string
	reads int
}

var errWouldWait = fmt.Errorf("the backend sent nothing more")

func (r *onceReader) Read(p []byte) (int, error) {
	r.reads++
	if r.reads > 1 {
		return 0, errWouldWait
	}
	return copy(p, r.data), nil
}

// TestPeekHeaderBlockStopsAtForeignLine checks that a first piece net/http would refuse at once is left to it at
// once, not after waiting for more (the header timeout), and that a header of the common form still in transit is
// waited for.
func TestPeekHeaderBlockStopsAtForeignLine(t *testing.T) {
	for _, tc := range []struct {
		data     string
		moreRead bool
	}{
		{"SSH-2.0-OpenSSH_9.6\r\n", false},
		{"220 smtp.example ESMTP\r\n", false},
		{"HTTP/1.1 200 OK\r\n X: folded-first\r\n", false},
		{"HTTP/1.1 200 OK\nContent-Length: 0\n", false},
		{"HTTP/1.1 200 OK\r\nBad Name: x\r\n", false},
		{"HTTP/1.0 200 OK\r\n", false},
		{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", true},
		{"HTTP/1.1 200 OK\r\nContent-Ty", true},
		{"HTTP/1.1 2", true},
	} {
		r := &onceReader{data: tc.data}
		if block := peekHeaderBlock(bufio.NewReaderSize(r, 4096)); block != nil {
			t.Errorf("%q: block %q, want none", tc.data, block)
		}
		if got := r.reads > 1; got != tc.moreRead {
			t.Errorf("%q: read again: %v, want %v", tc.data, got, tc.moreRead)
		}
	}
}
