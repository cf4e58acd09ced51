package testutil_test

import (
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestResolver(t *testing.T) {
	t.Parallel()
	r := testutil.NewResolver(map[string][]string{"a.test": {"10.0.0.1"}})
	r.SetSRV("_http._tcp.s.test", &net.SRV{Target: "a.test.", Port: 80})
	servfail := errors.New("SERVFAIL")
	r.Fail("broken.test", servfail)
	tests := []struct {
		host    string
		want    []string
		wantErr func(error) bool
	}{
		{"a.test", []string{"10.0.0.1"}, nil},
		{"missing.test", nil, func(err error) bool {
			var dnsErr *net.DNSError
			return errors.As(err, &dnsErr) && dnsErr.IsNotFound
		}},
		{"broken.test", nil, func(err error) bool { return errors.Is(err, servfail) }},
	}
	for _, tt := range tests {
		got, err := r.LookupHost(t.Context(), tt.host)
		if (tt.wantErr == nil && err != nil) || (tt.wantErr != nil && !tt.wantErr(err)) || !slices.Equal(got, tt.want) {
			t.Errorf("LookupHost(%q) = %v, %v; want %v", tt.host, got, err, tt.want)
		}
	}
	if _, recs, err := r.LookupSRV(t.Context(), "", "", "_http._tcp.s.test"); err != nil || len(recs) != 1 || recs[0].Port != 80 {
		t.Errorf("LookupSRV = %v, %v", recs, err)
	}
	r.SetHost("broken.test", "10.0.0.2") // setting a name clears its failure
	if got, err := r.LookupHost(t.Context(), "broken.test"); err != nil || !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("LookupHost after SetHost = %v, %v", got, err)
	}
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	testutil.Eventually(t, "the third call", func() bool { return calls.Add(1) >= 3 })
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3 (it stops once the condition holds)", n)
	}
}
