//go:build race

package driver_test

// raceEnabled: the race detector multiplies memory use, so memory bounds
// are only logged under it.
const raceEnabled = true
