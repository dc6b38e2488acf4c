//go:build !unix

package powerloss

import (
	"errors"
	"os"
)

// identity needs device and inode numbers, which only Unix systems give.
func identity(os.FileInfo) (dev, ino uint64, err error) {
	return 0, 0, errors.New("powerloss: needs a Unix system (device and inode numbers)")
}

func links(os.FileInfo) uint64 { return 0 }
