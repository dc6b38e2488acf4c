//go:build unix

package disk

import "syscall"

func fchmod(fd uintptr, mode uint32) error { return syscall.Fchmod(int(fd), mode) }
