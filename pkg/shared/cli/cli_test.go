package cli_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
)

func TestPrintError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, prefix string
		err          error
		want         string
	}{
		{"one line", "kedge: cannot start", errors.New("https listener: address in use"),
			"kedge: cannot start: https listener: address in use\n"},
		{"own prefix dropped", "winch login", errors.New("winch: no auth source \"x\""),
			"winch login: no auth source \"x\"\n"},
		{"problems one per line", "kedge: cannot start", errors.New("loading config documents:\nd.yaml: a: bad\nd.yaml: b: bad"),
			"kedge: cannot start: loading config documents:\n  d.yaml: a: bad\n  d.yaml: b: bad\n"},
		{"list without a heading", "kedge discover", errors.New("first\nsecond"),
			"kedge discover:\n  first\n  second\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b strings.Builder
			cli.PrintError(&b, tc.prefix, tc.err)
			if b.String() != tc.want {
				t.Errorf("got %q, want %q", b.String(), tc.want)
			}
		})
	}
}
