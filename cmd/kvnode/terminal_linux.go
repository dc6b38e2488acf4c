package main

import (
	"syscall"
	"unsafe"
)

// isTerminal reports whether fd is a terminal: whether it answers the
// TCGETS ioctl, which only terminals do (/dev/null is a character device
// too, so the file mode cannot tell).
func isTerminal(fd uintptr) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
