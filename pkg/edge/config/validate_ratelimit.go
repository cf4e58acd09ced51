package config

import (
	"math"

	"github.com/kedge-proxy/kedge/proto/kedgeconfig"
)

// Bounds of a route's rate_limit: beyond them a bucket is no limit at all, and the value is more likely a typo.
const (
	maxRateLimitRPS   = 1e6
	maxRateLimitBurst = 1e6
)

// rateLimit checks a route's rate_limit (nil: none).
func (v *validator) rateLimit(file, field string, l *kedgeconfig.RateLimit) {
	if l == nil {
		return
	}
	switch rps := l.GetRequestsPerSecond(); {
	case math.IsNaN(rps) || math.IsInf(rps, 0):
		v.fail(file, field+".requests_per_second", "%v is not a number of requests per second", rps)
	case rps <= 0:
		v.fail(file, field+".requests_per_second", "%v must be greater than 0 (leave rate_limit out for no limit)", rps)
	case rps > maxRateLimitRPS:
		v.fail(file, field+".requests_per_second", "%v is above %v; leave rate_limit out for no limit", rps, maxRateLimitRPS)
	}
	if b := l.GetBurst(); b > maxRateLimitBurst {
		v.fail(file, field+".burst", "%d is above %d", b, int(maxRateLimitBurst))
	}
}
