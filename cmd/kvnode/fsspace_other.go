//go:build !linux

package main

// filesystemSpace is not implemented off Linux (the image, Compose and
// Kubernetes all run Linux): the file-system gauges are left out.
func filesystemSpace(string) (avail, size uint64, ok bool) { return 0, 0, false }
