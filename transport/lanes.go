package transport

import "github.com/rafty-db/rafty/core"

// lane is one of a peer's two outgoing queues and streams. Each lane
// keeps its own order; the two are independent, so a heartbeat never
// waits for the appends queued before it (see doc.go, "Lanes").
type lane uint8

const (
	// laneBulk carries the data of replication: appends and their
	// responses, forwarded proposals, and anything too large for the
	// urgent lane. It uses the Stream RPC.
	laneBulk lane = iota
	// laneUrgent carries small control messages whose latency decides
	// liveness and read latency. It uses the UrgentStream RPC.
	laneUrgent
	numLanes
)

// Lane names, used as the "lane" label of the per-lane metrics.
const (
	// LaneBulk names the bulk lane (appends, their responses, forwarded
	// proposals).
	LaneBulk = "bulk"
	// LaneUrgent names the urgent lane (heartbeats, votes, read
	// confirmations and the other small control messages).
	LaneUrgent = "urgent"
)

func (l lane) String() string {
	if l == laneUrgent {
		return LaneUrgent
	}
	return LaneBulk
}

// MaxUrgentMessageBytes is the largest encoded message the urgent lane
// takes; a larger one of an urgent type (only a MsgPropResp returning
// large proposals can be) goes over the bulk lane, so that the urgent
// lane's queue and stream only ever hold small messages.
const MaxUrgentMessageBytes = 4 << 10

// urgentType says which message types take the urgent lane. The choice,
// type by type (every type of core/types.go is listed, so a new one must
// be decided here too):
//
//   - MsgHeartbeat, MsgHeartbeatResp: leadership and liveness, and the
//     leader's read rounds (Context) that confirm ReadIndex and lease
//     reads. A heartbeat late behind appends makes a follower time out
//     and delays every linearizable read. The commit index a heartbeat
//     carries is min(the follower's acknowledged match, commit), so it is
//     safe to apply before appends sent earlier.
//   - MsgVote, MsgVoteResp, MsgPreVote, MsgPreVoteResp: an election
//     stalls the cluster until it ends. Votes compare logs as they are
//     when the vote arrives, so overtaking appends is harmless.
//   - MsgReadIndex, MsgReadIndexResp: a follower's linearizable read
//     waits for this round trip; the read then waits for the follower to
//     apply up to the index, whichever lane brought the entries.
//   - MsgTimeoutNow, MsgTransferLeader: a leadership transfer pauses
//     proposals until it completes. MsgTimeoutNow is sent only once the
//     target acknowledged the whole log, so it never overtakes entries
//     the target needs.
//   - MsgPropResp (when small): a refusal of forwarded proposals; it
//     lets a client fail fast and retry elsewhere, which should not wait
//     behind the appends of the load that caused it. It carries the
//     refused proposals, so a large one goes bulk (MaxUrgentMessageBytes).
//
// The rest go bulk:
//
//   - MsgApp: the bulk itself.
//   - MsgAppResp: one per append, paced by them; kept with the
//     replication flow as the design of issue 15 decides (it is small:
//     moving it to the urgent lane would be a one-line change here).
//   - MsgProp: forwarded proposals are client data, as large as appends.
//   - MsgSnap never travels in a batch (SendSnapshot has its own
//     connection).
var urgentType = [...]bool{
	core.MsgHeartbeat:      true,
	core.MsgHeartbeatResp:  true,
	core.MsgVote:           true,
	core.MsgVoteResp:       true,
	core.MsgPreVote:        true,
	core.MsgPreVoteResp:    true,
	core.MsgReadIndex:      true,
	core.MsgReadIndexResp:  true,
	core.MsgTimeoutNow:     true,
	core.MsgTransferLeader: true,
	core.MsgPropResp:       true,
	core.MsgApp:            false,
	core.MsgAppResp:        false,
	core.MsgProp:           false,
	core.MsgSnap:           false,
}

// laneOf returns the lane of a message of type typ and encoded size.
func laneOf(typ core.MessageType, size int) lane {
	if int(typ) < len(urgentType) && urgentType[typ] && size <= MaxUrgentMessageBytes {
		return laneUrgent
	}
	return laneBulk
}
