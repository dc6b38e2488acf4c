//go:build unix

package powerloss

import (
	"fmt"
	"os"
	"syscall"
)

// identity returns a file's device and inode numbers: a file's name
// changes with renames, these do not.
func identity(st os.FileInfo) (dev, ino uint64, err error) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("powerloss: %s: no device and inode numbers", st.Name())
	}
	return uint64(sys.Dev), uint64(sys.Ino), nil //nolint:unconvert // int32 on some systems
}

// links returns a file's number of hard links.
func links(st os.FileInfo) uint64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(sys.Nlink) //nolint:unconvert // uint16 on some systems
	}
	return 0
}
