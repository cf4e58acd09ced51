package document

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// offsetOf converts protojson's 1-based line and column (counted in runes) into a byte offset of js.
func offsetOf(js []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(js[off:], '\n')
		if i < 0 {
			return len(js)
		}
		off += i + 1
	}
	for c := 1; c < col && off < len(js); c++ {
		_, size := utf8.DecodeRune(js[off:])
		off += size
	}
	return off
}

// jsonPathAt returns the path ("http.routes[2].backend_name") of the token that starts at byte offset off of js: a
// member name yields the member's path, a value the path of that value. If js is malformed before off, it returns
// the path reached so far.
func jsonPathAt(js []byte, off int) string {
	type frame struct {
		path      string
		array     bool
		index     int
		expectKey bool
		key       string
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	// current is the path of the value about to be read in the innermost container.
	current := func() string {
		if len(stack) == 0 {
			return ""
		}
		top := stack[len(stack)-1]
		if top.array {
			return fmt.Sprintf("%s[%d]", top.path, top.index)
		}
		return joinPath(top.path, top.key)
	}
	// done records that a value ended in the innermost container.
	done := func() {
		if len(stack) == 0 {
			return
		}
		top := stack[len(stack)-1]
		if top.array {
			top.index++
		} else {
			top.expectKey = true
		}
	}
	last := ""
	for range len(js) + 1 { // every token consumes at least one byte
		tok, err := dec.Token()
		if err != nil {
			return last
		}
		end := int(dec.InputOffset())
		if len(stack) > 0 && stack[len(stack)-1].expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				done()
				continue
			}
			top := stack[len(stack)-1]
			top.key, _ = tok.(string)
			top.expectKey = false
			last = joinPath(top.path, top.key)
			if end > off {
				return last
			}
			continue
		}
		path := current()
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				last = path
				if end > off {
					return path
				}
				stack = append(stack, &frame{path: path, array: d == '[', expectKey: d == '{'})
			case '}', ']':
				stack = stack[:len(stack)-1]
				done()
			}
			continue
		}
		last = path
		if end > off {
			return path
		}
		done()
	}
	return last
}
