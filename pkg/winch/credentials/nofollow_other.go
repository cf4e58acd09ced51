//go:build !unix

package credentials

import (
	"fmt"
	"os"
)

// openNoFollow opens path for reading, failing if path is a symlink. Without O_NOFOLLOW the check is done first.
func openNoFollow(path string) (*os.File, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if info.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a symlink", path)
	}
	return os.Open(path)
}
