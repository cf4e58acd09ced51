package backend

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// readResponse reads the response to req from pc. A response header in the common form is parsed by parseCommon,
// which costs a handful of allocations (the header's keys are interned per connection, its values share one
// string); anything else, and any response whose header does not fit in pc's read buffer, is left to
// http.ReadResponse, which has not consumed a byte when it starts.
func readResponse(pc *h1Conn, req *http.Request) (*http.Response, error) {
	if block := peekHeaderBlock(pc.br); block != nil {
		if resp := parseCommon(block, req, &pc.keys); resp != nil {
			_, _ = pc.br.Discard(len(block)) // buffered: cannot fail
			setBody(resp, pc.br)
			return resp, nil
		}
	}
	return http.ReadResponse(pc.br, req)
}

// peekHeaderBlock returns the bytes up to and including the empty line that ends the response header in br,
// reading more as long as the buffer has room, without consuming anything. It returns nil as soon as a line cannot
// belong to a header of the common form (so that an answer net/http refuses at its first line, say a port that
// speaks another protocol, is refused at once, not after the header timeout), when br's buffer fills up first or
// when reading fails: the caller then leaves the response to http.ReadResponse, which reads it from the start.
func peekHeaderBlock(br *bufio.Reader) []byte {
	next := 0 // where the first line not checked yet starts
	for {
		buf, _ := br.Peek(br.Buffered())
		for {
			j := bytes.IndexByte(buf[next:], '\n')
			if j < 0 {
				break
			}
			line := buf[next : next+j+1]
			if !commonLine(line, next == 0) {
				return nil
			}
			next += len(line)
			if len(line) == 2 { // CRLF alone: the header's end
				return buf[:next]
			}
		}
		if br.Buffered() == br.Size() {
			return nil
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil
		}
	}
}

// commonLine reports whether line, which ends in LF, may belong to a response header of the form parseCommon
// takes: it ends in CRLF, and is the status line's start (first), an empty line, or a token and a colon.
func commonLine(line []byte, first bool) bool {
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return false
	}
	if first {
		const proto = "HTTP/1.1 "
		return n >= len(proto)+5 && string(line[:len(proto)]) == proto &&
			isDigit(line[len(proto)]) && isDigit(line[len(proto)+1]) && isDigit(line[len(proto)+2])
	}
	if n == 2 {
		return true
	}
	i := 0
	for i < n && wire.IsTokenChar(line[i]) {
		i++
	}
	return i > 0 && line[i] == ':'
}

// maxInternedKeys bounds a connection's table of header keys, so that a backend sending ever new names cannot grow it.
const maxInternedKeys = 64

// parseCommon parses a response header block of the common form, or returns nil for net/http to parse: an
// HTTP/1.1 status line with a final status (not 1xx or 101) and a reason of visible ASCII; header lines of a token,
// a colon and a value of visible ASCII, spaces and tabs, each ending in CRLF (no folded lines); at most one
// Content-Length of digits, Transfer-Encoding only as one "chunked" without a Content-Length, no Trailer or Pragma
// field; and a body that is delimited (not one that ends with the connection). The result is what
// http.ReadResponse makes of the same bytes, without its Body; FuzzParseCommon checks this against it.
func parseCommon(block []byte, req *http.Request, keys *map[string]string) *http.Response {
	const proto = "HTTP/1.1 "
	if len(block) < len(proto)+5 || string(block[:len(proto)]) != proto {
		return nil
	}
	// One string holds the status line and every value; the response's strings are slices of it.
	s := string(block)
	line, rest, ok := cutLine(s)
	if !ok {
		return nil
	}
	status := line[len(proto):]
	if len(status) < 3 || !(isDigit(status[0]) && isDigit(status[1]) && isDigit(status[2])) || (len(status) > 3 && status[3] != ' ') ||
		!visible(status[3:]) {
		return nil
	}
	code := int(status[0]-'0')*100 + int(status[1]-'0')*10 + int(status[2]-'0')
	if code < 200 {
		return nil // 1xx (101 too) go through net/http and exchange's loop
	}
	lines := strings.Count(rest, "\n")
	h := make(http.Header, lines)
	vals := make([]string, lines)
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return nil
		}
		if line == "" {
			break
		}
		colon := 0
		for colon < len(line) && wire.IsTokenChar(line[colon]) {
			colon++
		}
		if colon == 0 || colon == len(line) || line[colon] != ':' {
			return nil
		}
		v := wire.TrimOWS(line[colon+1:])
		if !visible(v) {
			return nil
		}
		k := internKey(line[:colon], keys)
		vals[0] = v
		if old := h[k]; old != nil {
			h[k] = append(old, v)
		} else {
			h[k] = vals[:1:1]
		}
		vals = vals[1:]
	}
	if rest != "" {
		return nil
	}
	resp := &http.Response{
		Status: status, StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Request: req,
	}
	if _, ok := h["Trailer"]; ok {
		return nil
	}
	if _, ok := h["Pragma"]; ok {
		return nil
	}
	if conn, ok := h["Connection"]; ok && wire.ContainsToken(conn, "close") {
		resp.Close = true
		delete(h, "Connection")
	}
	cl := int64(-1)
	if v, ok := h["Content-Length"]; ok {
		if len(v) != 1 || v[0] == "" || len(v[0]) > 18 || !allDigits(v[0]) {
			return nil
		}
		cl, _ = strconv.ParseInt(v[0], 10, 64) // at most 18 digits: within int64, cannot fail
	}
	noBody := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if te, ok := h["Transfer-Encoding"]; ok {
		if len(te) != 1 || !wire.EqualFoldASCII(te[0], "chunked") || cl >= 0 || noBody {
			return nil
		}
		delete(h, "Transfer-Encoding")
		resp.TransferEncoding = []string{"chunked"}
		resp.ContentLength = -1
		return resp
	}
	switch {
	case req.Method == http.MethodHead:
		resp.ContentLength = cl
	case noBody:
		resp.ContentLength = 0
	case cl < 0:
		return nil // the body ends with the connection
	default:
		resp.ContentLength = cl
	}
	return resp
}

// setBody gives resp, a header parseCommon accepted, the body its framing calls for, read from br.
func setBody(resp *http.Response, br *bufio.Reader) {
	switch {
	case resp.TransferEncoding != nil:
		resp.Body = &chunkedBody{src: httputil.NewChunkedReader(br), br: br, resp: resp}
	case resp.ContentLength > 0 && resp.Request.Method != http.MethodHead:
		resp.Body = &lengthBody{br: br, left: resp.ContentLength}
	default:
		resp.Body = http.NoBody
	}
}

// cutLine splits s after its first line, which must end in CRLF, and returns the line without it.
func cutLine(s string) (line, rest string, ok bool) {
	line, rest, ok = strings.Cut(s, "\n")
	if !ok || !strings.HasSuffix(line, "\r") {
		return "", "", false
	}
	return line[:len(line)-1], rest, true
}

// internKey returns the canonical form of the header name b (token characters only), from the connection's table
// when it was seen before.
func internKey(b string, keys *map[string]string) string {
	var buf [64]byte
	if len(b) > len(buf) {
		return textproto.CanonicalMIMEHeaderKey(b)
	}
	c := buf[:len(b)]
	upper := true
	for i := 0; i < len(b); i++ {
		ch := b[i]
		if upper && 'a' <= ch && ch <= 'z' {
			ch -= 'a' - 'A'
		} else if !upper && 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		c[i] = ch
		upper = ch == '-'
	}
	if k, ok := (*keys)[string(c)]; ok {
		return k
	}
	k := string(c)
	if *keys == nil {
		*keys = make(map[string]string, 16)
	}
	if len(*keys) < maxInternedKeys {
		(*keys)[k] = k
	}
	return k
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// visible reports whether s holds only visible ASCII, spaces and tabs.
func visible(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return false
		}
	}
	return true
}

// lengthBody is a body of Content-Length bytes. It reports io.EOF with the last bytes, and
// io.ErrUnexpectedEOF when the connection ends before them, as net/http's does.
type lengthBody struct {
	br   *bufio.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close reports whether the body was read to its end; h1Body only reuses the connection then.
func (b *lengthBody) Close() error {
	if b.left > 0 {
		return errBodyNotRead
	}
	return nil
}

var (
	errBodyNotRead = errors.New("response body not read to its end")
	errTrailerEOF  = errors.New("http: unexpected EOF reading trailer")
)

// chunkedBody is a chunked body; at its end it reads the trailer section into resp.Trailer, as net/http's does.
type chunkedBody struct {
	src  io.Reader
	br   *bufio.Reader
	resp *http.Response
	eof  bool
	err  error
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.src.Read(p)
	if err == io.EOF {
		if terr := b.readTrailer(); terr != nil {
			b.err = terr
			return n, terr
		}
		b.eof = true
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *chunkedBody) readTrailer() error {
	buf, err := b.br.Peek(2)
	if len(buf) == 2 && buf[0] == '\r' && buf[1] == '\n' {
		_, _ = b.br.Discard(2)
		return nil
	}
	if len(buf) < 2 {
		return errTrailerEOF
	}
	if err != nil {
		return err
	}
	// As net/http: the trailer must end within the read buffer.
	for size := 4; ; size++ {
		buf, err := b.br.Peek(size)
		if bytes.HasSuffix(buf, []byte("\r\n\r\n")) {
			break
		}
		if err != nil {
			return errors.New("http: suspiciously long trailer after chunked body")
		}
	}
	hdr, err := textproto.NewReader(b.br).ReadMIMEHeader()
	if err != nil {
		if err == io.EOF {
			return errTrailerEOF
		}
		return err
	}
	if b.resp.Trailer == nil {
		b.resp.Trailer = http.Header(hdr)
	} else {
		for k, v := range hdr {
			b.resp.Trailer[k] = v
		}
	}
	return nil
}

func (b *chunkedBody) Close() error {
	if !b.eof {
		return errBodyNotRead
	}
	return nil
}
