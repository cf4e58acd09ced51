package wire

import "strings"

// kedgeOwnedPrefix starts every header and metadata key kedge owns, in lower case.
const kedgeOwnedPrefix = "x-kedge-"

// KedgeOwned reports whether a request header or gRPC metadata key (in any case) is kedge's to set towards backends,
// so that a client's own must be removed before a request is forwarded: every X-Kedge-* name (X-Kedge-Identity,
// X-Kedge-Backend-Name, X-Kedge-Error, X-Kedge-Request-Id, which kedge then sets itself, ...) except
// X-Kedge-Info-Logs, which clients send on purpose. It is the one rule for HTTP and gRPC, and does not allocate.
func KedgeOwned(name string) bool {
	return len(name) >= len(kedgeOwnedPrefix) && strings.EqualFold(name[:len(kedgeOwnedPrefix)], kedgeOwnedPrefix) &&
		!(len(name) == len(HeaderInfoLogs) && strings.EqualFold(name, HeaderInfoLogs))
}
