package driver

// withStateMachine runs fn with exclusive use of the state machine,
// ordered after every committed entry handed to the applier so far: for
// capturing a snapshot (StateMachine.Snapshot) and restoring one
// (Restore), which must see the state at a known applied index and must
// not run concurrently with Apply. Loop goroutine only; it blocks the
// loop until the applier has drained, so callers keep fn short except
// for installs, which are rare.
func (l *loop) withStateMachine(fn func(sm StateMachine) error) error {
	// Issue 15 skeleton: apply still runs on the loop, so the state
	// machine is idle whenever the loop runs.
	return fn(l.n.cfg.StateMachine)
}
