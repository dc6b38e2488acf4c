//go:build !linux

package disk

import "testing"

// dropPageCache is unsupported off Linux.
func dropPageCache(b *testing.B, dir string) bool { return false }
