//go:build unix

package credentials

import (
	"os"
	"syscall"
)

// openNoFollow opens path for reading, failing if path is a symlink.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}
