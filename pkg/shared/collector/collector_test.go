package collector

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func counter(help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_total", Help: help}, []string{"result"})
}

func TestRegister(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	first := counter("h")
	got, err := Register(reg, first)
	if err != nil || got != first {
		t.Fatalf("Register(first) = %p, %v; want the collector itself", got, err)
	}

	// An equal collector: the registered one is returned and counts for both.
	got, err = Register(reg, counter("h"))
	if err != nil || got != first {
		t.Fatalf("Register(equal) = %p, %v; want the first collector %p", got, err, first)
	}
	got.WithLabelValues("ok").Inc()
	if n := testutil.ToFloat64(first.WithLabelValues("ok")); n != 1 {
		t.Errorf("shared counter = %v, want 1", n)
	}

	// A conflicting collector under the same name: it is returned unregistered, with the error.
	other := counter("other help")
	got, err = Register(reg, other)
	if err == nil || got != other {
		t.Errorf("Register(conflicting) = %p, %v; want the collector itself and an error", got, err)
	}

	// A collector of another Go type under the same description: ours is kept, with the error.
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "test_total", Help: "h"}, []string{"result"})
	if g, err := Register(reg, gauge); err == nil || g != gauge {
		t.Errorf("Register(gauge) = %p, %v; want the gauge itself and an error", g, err)
	}

	// No registry: nothing to register.
	if g, err := Register(nil, other); err != nil || g != other {
		t.Errorf("Register(nil registry) = %p, %v", g, err)
	}
}

type failing struct{ prometheus.Registerer }

func (failing) Register(prometheus.Collector) error { return errors.New("cannot register") }

func TestRegisterError(t *testing.T) {
	t.Parallel()
	c := counter("h")
	got, err := Register(failing{}, c)
	if got != c || err == nil || err.Error() != "collector: cannot register" {
		t.Errorf("Register = %p, %v; want the collector and the wrapped error", got, err)
	}
}
