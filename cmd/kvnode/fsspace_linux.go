//go:build linux

package main

import "syscall"

// filesystemSpace returns the bytes available to an unprivileged process
// (f_bavail, what kvnode, running as non-root, can still write) and the
// total size of the file system holding dir.
func filesystemSpace(dir string) (avail, size uint64, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Bsize <= 0 {
		return 0, 0, false
	}
	bs := uint64(st.Bsize)
	return st.Bavail * bs, st.Blocks * bs, true
}
