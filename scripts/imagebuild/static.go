package main

import (
	"debug/elf"
	"fmt"
)

// checkStatic refuses a binary that would not run in the image: not an ELF executable for arch, or dynamically
// linked (the image, like distroless static, has no C library or dynamic loader).
func checkStatic(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	var want elf.Machine
	switch arch {
	case "amd64":
		want = elf.EM_X86_64
	case "arm64":
		want = elf.EM_AARCH64
	default:
		return fmt.Errorf("architecture %q: want amd64 or arm64", arch)
	}
	if f.Machine != want {
		return fmt.Errorf("%s is built for %s, want %s (%s)", path, f.Machine, want, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}
