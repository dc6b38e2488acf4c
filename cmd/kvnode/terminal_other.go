//go:build !linux && !darwin

package main

// isTerminal reports false where kvnode has no terminal check: progress
// is then reported in plain lines.
func isTerminal(uintptr) bool { return false }
