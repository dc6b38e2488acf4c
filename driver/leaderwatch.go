package driver

import (
	"time"

	"github.com/rafty-db/rafty/core"
)

// A node that knows no leader for noLeaderWarnAfter election timeouts
// logs a warning, then again after twice as long, and so on up to one
// warning every maxNoLeaderWarnEvery election timeouts. With the default
// timing (election timeout 500 ms) that is after 5 s, then 10 s, 20 s,
// ..., then every 5 min 20 s.
const (
	noLeaderWarnAfter    = 10
	maxNoLeaderWarnEvery = 640
)

// watchLeader runs for the node's lifetime (it ends when the loop stops)
// and turns a cluster that cannot form into a log line instead of a
// silent wait. An election takes one or two election timeouts, so ten
// without a leader mean something is wrong that Raft will not fix by
// itself: too few members running, addresses nobody listens on, cluster
// IDs that differ, or a transport that was never started.
func (n *Node) watchLeader() {
	timeout := time.Duration(n.raftCfg.ElectionTicks) * n.cfg.TickInterval
	ticker := n.cfg.Clock.NewTicker(timeout)
	defer ticker.Stop()
	since := n.cfg.Clock.Now() // start of the leaderless stretch; zero while there is a leader
	gap := noLeaderWarnAfter * timeout
	warnAt := since.Add(gap)
	warned := false
	for {
		select {
		case <-n.loopDone:
			return
		case <-ticker.C():
		}
		now := n.cfg.Clock.Now()
		if lead, _ := n.Leader(); lead != core.None {
			if warned {
				n.log.Info("leader known again", "leader", lead, "after", now.Sub(since).Round(time.Millisecond))
			}
			since, warned = time.Time{}, false
			continue
		}
		if since.IsZero() {
			since, gap = now, noLeaderWarnAfter*timeout
			warnAt = since.Add(gap)
		}
		if now.Before(warnAt) {
			continue
		}
		st := n.Status()
		n.log.Warn("no leader known; check that a majority of the members run, that each listens at its Peers address and shares this cluster ID, and that the transport was started (the embedder starts a Config.Transport)",
			"for", now.Sub(since).Round(time.Millisecond), "term", st.Term, "role", st.Role.String(),
			"voters", st.Membership.Voters)
		warned = true
		gap = min(2*gap, maxNoLeaderWarnEvery*timeout)
		warnAt = now.Add(gap)
	}
}
