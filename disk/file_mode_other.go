//go:build !unix

package disk

// fchmod is a no-op where file modes do not restrict readers this way.
func fchmod(fd uintptr, mode uint32) error { return nil }
