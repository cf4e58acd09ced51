// Package buildinfo reports what binary is running: the release version stamped in at link time (else the module
// version the Go toolchain recorded, as after "go install ...@v1.2.3"), the Go version and the VCS revision.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version is the release version. It is the one package-level variable the project allows: the linker sets it with
// -ldflags "-X github.com/kedge-proxy/kedge/pkg/shared/buildinfo.Version=v1.2.3" (the Makefile does), and nothing
// writes it at run time. Empty: Get reports the main module's version, or "dev".
var Version = ""

// Info describes the running binary. The JSON names keep the original kedge's "build_version" key of /_version.
type Info struct {
	// Version is the release version from the linker; else the main module's version as the Go toolchain recorded
	// it ("v1.2.3" after go install ...@v1.2.3; a pseudo-version such as "v0.0.0-20261205052100-0123abcdef01+dirty"
	// for go build in a git checkout); else "dev".
	Version string `json:"build_version"`
	// GoVersion is the toolchain that built the binary, e.g. "go1.26.8".
	GoVersion string `json:"go_version"`
	// Revision is the VCS commit; empty (but present in JSON) when the build did not record one (-buildvcs=false,
	// go test, go run).
	Revision string `json:"revision"`
	// RevisionTime is the commit time in RFC 3339, when recorded.
	RevisionTime string `json:"revision_time,omitempty"`
	// Modified reports that the working tree had uncommitted changes at build time.
	Modified bool `json:"modified,omitempty"`
}

// Get returns the build information of the running binary.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	info := Info{Version: version(Version, bi, ok), GoVersion: runtime.Version()}
	if !ok {
		return info
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.RevisionTime = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String formats the information for --version output and logs, e.g. "v1.2.3 (go1.26.8, revision 0123abc, modified)".
func (i Info) String() string {
	s := i.Version + " (" + i.GoVersion
	if i.Revision != "" {
		s += ", revision " + i.Revision
		if i.Modified {
			s += ", modified"
		}
	}
	return s + ")"
}

// version is Info.Version: the linker's version, else the main module's (not "(devel)", which go build writes when
// it knows none), else "dev".
func version(linked string, bi *debug.BuildInfo, ok bool) string {
	switch {
	case linked != "":
		return linked
	case ok && bi.Main.Version != "" && bi.Main.Version != "(devel)":
		return bi.Main.Version
	}
	return "dev"
}
