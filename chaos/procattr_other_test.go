//go:build !linux

package chaos

import "syscall"

// sysProcAttr: only Linux can tie a child's life to its parent's; the
// test's cleanup kills the nodes elsewhere.
func sysProcAttr() *syscall.SysProcAttr { return nil }
