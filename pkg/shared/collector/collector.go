// Package collector registers Prometheus collectors so that components built on one registry share them: the
// second proxy, pool or watcher made in a process (or a test) counts into the series the first one registered
// instead of failing.
package collector

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg and returns the collector to use: c, or the equal collector (same name, labels and
// help) that reg already holds. Any other failure, such as a collector of another shape under the same name, is
// returned with c, which then still counts but is not exported; callers decide whether that is fatal. A nil reg
// registers nothing and returns c.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("collector: %w", err)
}
