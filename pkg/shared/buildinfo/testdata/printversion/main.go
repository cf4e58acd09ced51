// Command printversion prints buildinfo.Get as JSON; the buildinfo tests build it with -ldflags -X.
package main

import (
	"encoding/json"
	"os"

	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
)

func main() {
	_ = json.NewEncoder(os.Stdout).Encode(buildinfo.Get())
}
