package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	mod := func(v string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/kedge-proxy/kedge", Version: v}}
	}
	tests := []struct {
		name, linked string
		bi           *debug.BuildInfo
		ok           bool
		want         string
	}{
		{"linker flag wins", "v1.2.3", mod("v9.9.9"), true, "v1.2.3"},
		{"go install ...@v1.4.0", "", mod("v1.4.0"), true, "v1.4.0"},
		{"go build in a checkout", "", mod("v0.0.0-20261205052100-0123abcdef01+dirty"), true, "v0.0.0-20261205052100-0123abcdef01+dirty"},
		{"go build without VCS", "", mod("(devel)"), true, "dev"},
		{"no version recorded", "", mod(""), true, "dev"},
		{"no build info", "", nil, false, "dev"},
	}
	for _, tt := range tests {
		if got := version(tt.linked, tt.bi, tt.ok); got != tt.want {
			t.Errorf("%s: version = %q, want %q", tt.name, got, tt.want)
		}
	}
}
