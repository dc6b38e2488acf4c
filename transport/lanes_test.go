package transport

import (
	"github.com/rafty-db/rafty/core"
)

// perLane splits msgs by the lane they travel on, keeping their order:
// the transport orders each lane, not the two together.
func perLane(msgs []core.Message) (urgent, bulk []core.Message) {
	for _, m := range msgs {
		if laneOf(m.Type, messageSize(&m)) == laneUrgent {
			urgent = append(urgent, m)
		} else {
			bulk = append(bulk, m)
		}
	}
	return urgent, bulk
}
