package disk

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// dropPageCache asks the kernel to evict the segment files from the page
// cache (POSIX_FADV_DONTNEED), so that Open reads from the device.
func dropPageCache(b *testing.B, dir string) bool {
	paths, _ := filepath.Glob(filepath.Join(dir, walDirName, "*"+segmentSuffix))
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		const posixFadvDontneed = 4
		_, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, posixFadvDontneed, 0, 0)
		f.Close()
		if errno != 0 {
			b.Fatalf("fadvise %s: %v", p, errno)
		}
	}
	return true
}
