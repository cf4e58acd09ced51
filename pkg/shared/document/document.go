// Package document decodes config documents strictly: it reads a document from a file or inline content, turns JSON
// or YAML into a protobuf message with unknown fields rejected, and reports every problem as a FieldError naming the
// file, the JSON path of the offending value and the reason.
//
// It knows no schema of its own: kedge's and winch's config packages pass their generated messages and add their
// own validation on top, reporting it with the same FieldError.
package document

import (
	"errors"
	"io/fs"
	"os"
)

// FieldError is one problem in a document. Decoders and validators return errors.Join of *FieldError, so every
// problem is listed; FieldErrors takes them apart again.
type FieldError struct {
	// File is the document's path ("director.yaml") or, for inline content, its flag ("--server_mapper_config").
	File string
	// Field is the path of the offending value in JSON terms ("http.routes[2].backend_name"); "" for the whole file.
	Field string
	// Reason says what is wrong.
	Reason string
}

// Error formats the problem like a compiler diagnostic: "file: field: reason".
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.File + ": " + e.Reason
	}
	return e.File + ": " + e.Field + ": " + e.Reason
}

// FieldErrors returns every *FieldError inside err (which may be a tree of joined and wrapped errors), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			if c := u.Unwrap(); c != nil {
				walk(c)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// Read returns a document's content and the name to report it under: the file at path if path is set (the file
// wins over inline content), else inline under inlineName (the flag that carries it). An unreadable file is a
// *FieldError for the whole file.
func Read(path, inline, inlineName string) (data []byte, name string, err error) {
	if path == "" {
		return []byte(inline), inlineName, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, path, &FieldError{File: path, Reason: "reading the file: " + err.Error()}
	}
	return b, path, nil
}

// joinPath appends a member name to a JSON path.
func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
