//go:build !unix

package disk

import "fmt"

// dirLock is unsupported off Unix: Open refuses rather than run unlocked.
type dirLock struct{}

func lockDir(dir string) (*dirLock, error) {
	return nil, fmt.Errorf("disk: locking %s: directory locks need flock(2), unsupported on this platform", dir)
}

func (l *dirLock) release() error { return nil }
