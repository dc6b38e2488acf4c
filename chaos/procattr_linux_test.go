package chaos

import "syscall"

// sysProcAttr makes every node die with the test binary (SIGKILL when the
// parent goes away), so a crashed or timed-out test leaves no process
// behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
