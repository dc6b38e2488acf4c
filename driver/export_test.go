package driver

import "sync"

// Test-only access to the snapshot installation hooks.

// Steps of installing a received snapshot at which SetInstallHook's hook
// runs.
const (
	StepBeforeWrite     = stepBeforeWrite
	StepMidStream       = stepMidStream
	StepAfterTempWrite  = stepAfterTempWrite
	StepAfterCommit     = stepAfterCommit
	StepAfterRestore    = stepAfterRestore
	StepAfterLogInstall = stepAfterLogInstall
)

// InstallSteps lists them in order.
var InstallSteps = []string{
	StepBeforeWrite, StepMidStream, StepAfterTempWrite, StepAfterCommit, StepAfterRestore, StepAfterLogInstall,
}

// SetInstallHook makes the node started with cfg run hook at each step of
// installing a received snapshot; an error crashes the node there (its
// loop stops as on a storage failure, files left as they are).
func SetInstallHook(cfg *Config, hook func(step string) error) { cfg.hook = hook }

// BlockLoop makes n's loop goroutine wait, as if the whole process were
// paused (persisting and applying happen elsewhere and never block it),
// until release is called. It returns once the loop is blocked.
func BlockLoop(n *Node) (release func()) {
	blocked, gate := make(chan struct{}), make(chan struct{})
	req := ctrlRequest{reply: make(chan error, 1), smFree: true, lfn: func(*loop) error {
		close(blocked)
		<-gate
		return nil
	}}
	n.ctrlc <- req
	<-blocked
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}
