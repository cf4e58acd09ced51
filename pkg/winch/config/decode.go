package config

import (
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/kedge-proxy/kedge/pkg/shared/document"
)

// FieldError is one problem in a document ("winch_mapper.json: routes[2].proxy_auth: reason"). The loaders return
// errors.Join of *FieldError, so every problem is listed; FieldErrors takes them apart again.
type FieldError = document.FieldError

// FieldErrors returns every *FieldError inside err (a tree of joined and wrapped errors), in order.
func FieldErrors(err error) []*FieldError { return document.FieldErrors(err) }

// decode fills m from a JSON or YAML document, reporting every unknown field and mistyped value with its path at
// once before any document-specific validation runs.
func decode(name string, data []byte, m proto.Message) error {
	return document.Decode(name, data, m, document.AllProblems)
}

func indexed(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// quote quotes s for messages, as JSON would.
func quote(s string) string { return strconv.Quote(s) }
