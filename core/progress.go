package core

import "fmt"

// ProgressState is how the leader currently replicates to one follower.
type ProgressState uint8

const (
	// ProgressProbe: the leader does not know where the follower's log
	// matches; it sends one append at a time and waits for the answer.
	ProgressProbe ProgressState = iota
	// ProgressReplicate: the logs match up to Match; the leader pipelines
	// appends, bounded by the inflight window.
	ProgressReplicate
	// ProgressSnapshot: the follower needs entries the leader compacted;
	// the leader waits for a snapshot transfer to finish.
	ProgressSnapshot
)

func (s ProgressState) String() string {
	switch s {
	case ProgressProbe:
		return "probe"
	case ProgressReplicate:
		return "replicate"
	case ProgressSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("ProgressState(%d)", uint8(s))
}

// Progress is the leader's view of one follower (paper Figure 2,
// nextIndex/matchIndex, plus flow-control state).
//
// Invariant: Match < Next. Entries up to Match are known to be durable on
// the follower and identical to the leader's.
type Progress struct {
	Match, Next uint64
	State       ProgressState
	// ProbeSent: in probe state, an append is outstanding; wait for its
	// answer or the next heartbeat response before sending another.
	ProbeSent bool
	// PendingSnapshot is the index of the snapshot being sent.
	PendingSnapshot uint64
	// RecentActive: the follower was heard from within the last
	// election timeout.
	RecentActive bool
	// lastHeardTick is the leader tick at which the follower was last
	// heard from (the leader's own entry is always the current tick).
	lastHeardTick uint64
	// heard: lastHeardTick means something. False for a member added
	// during this term until it answers, and for learners at election
	// (they did not take part in it); see heardRecently.
	heard bool
	// IsLearner: the follower receives the log but does not vote.
	IsLearner bool
	// sentCommit is the commit index last sent to this follower.
	sentCommit uint64
	// ackedRound is the last read round this follower confirmed.
	ackedRound uint64
	inflights  inflights
}

func (pr *Progress) String() string {
	return fmt.Sprintf("%s match=%d next=%d inflight=%d/%dB", pr.State, pr.Match, pr.Next, pr.inflights.count, pr.inflights.bytes)
}

func (pr *Progress) becomeProbe() {
	// After a snapshot the follower is known to have at least the
	// snapshot, so probe right after it.
	if pr.State == ProgressSnapshot {
		pr.Next = max(pr.Match+1, pr.PendingSnapshot+1)
	} else {
		pr.Next = pr.Match + 1
	}
	pr.State = ProgressProbe
	pr.ProbeSent = false
	pr.PendingSnapshot = 0
	pr.inflights.reset()
}

func (pr *Progress) becomeReplicate() {
	pr.State = ProgressReplicate
	pr.ProbeSent = false
	pr.PendingSnapshot = 0
	pr.Next = pr.Match + 1
	pr.inflights.reset()
}

func (pr *Progress) becomeSnapshot(index uint64) {
	pr.State = ProgressSnapshot
	pr.ProbeSent = false
	pr.PendingSnapshot = index
	pr.inflights.reset()
}

// maybeUpdate records an acknowledgement of index n. It reports whether
// Match advanced.
func (pr *Progress) maybeUpdate(n uint64) bool {
	updated := false
	if pr.Match < n {
		pr.Match = n
		updated = true
		pr.ProbeSent = false
	}
	pr.Next = max(pr.Next, n+1)
	return updated
}

// maybeDecrTo handles a rejection of the append whose previous index was
// rejected; matchHint is the leader's best guess of where the logs agree.
// It reports false for a stale rejection, which is ignored.
func (pr *Progress) maybeDecrTo(rejected, matchHint uint64) bool {
	if pr.State == ProgressReplicate {
		// Pipelined appends were answered out of date; anything at or
		// below Match is known to match already.
		if rejected <= pr.Match {
			return false
		}
		pr.Next = pr.Match + 1
		return true
	}
	// In probe state only the answer to the outstanding probe counts.
	if pr.Next-1 != rejected {
		return false
	}
	pr.Next = max(min(rejected, matchHint+1), pr.Match+1)
	pr.ProbeSent = false
	return true
}

// isPaused reports whether the leader must not send appends now.
func (pr *Progress) isPaused() bool {
	switch pr.State {
	case ProgressProbe:
		return pr.ProbeSent
	case ProgressReplicate:
		return pr.inflights.full()
	}
	return true
}

// inflights is a bounded FIFO of appends sent but not yet acknowledged,
// each recorded by its last index and entry bytes. It caps both the count
// (maxCount) and the bytes (maxBytes) so a slow follower costs the leader
// bounded memory and bandwidth.
type inflights struct {
	start, count int
	bytes        uint64
	maxCount     int
	maxBytes     uint64
	// ring grows on demand up to maxCount, so idle followers cost little.
	ring []inflight
}

type inflight struct {
	last  uint64
	bytes uint64
}

func newInflights(maxCount int, maxBytes uint64) inflights {
	return inflights{maxCount: maxCount, maxBytes: maxBytes}
}

func (in *inflights) full() bool {
	return in.count >= in.maxCount || in.bytes >= in.maxBytes
}

func (in *inflights) add(last, bytes uint64) {
	if in.count >= in.maxCount {
		return // caller checked full(); never overwrite
	}
	if in.count == len(in.ring) {
		in.grow()
	}
	i := (in.start + in.count) % len(in.ring)
	in.ring[i] = inflight{last: last, bytes: bytes}
	in.count++
	in.bytes += bytes
}

func (in *inflights) grow() {
	n := max(4, 2*len(in.ring))
	n = min(n, in.maxCount)
	ring := make([]inflight, n)
	for i := 0; i < in.count; i++ {
		ring[i] = in.ring[(in.start+i)%len(in.ring)]
	}
	in.ring, in.start = ring, 0
}

// freeLE releases every append whose last index is <= idx.
func (in *inflights) freeLE(idx uint64) {
	for in.count > 0 {
		f := in.ring[in.start]
		if f.last > idx {
			return
		}
		in.bytes -= f.bytes
		in.start = (in.start + 1) % len(in.ring)
		in.count--
	}
	in.start = 0
}

// freeFirst releases the oldest append.
func (in *inflights) freeFirst() {
	if in.count == 0 {
		return
	}
	in.freeLE(in.ring[in.start].last)
}

func (in *inflights) reset() {
	in.start, in.count, in.bytes = 0, 0, 0
}
