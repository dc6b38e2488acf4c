package main

import (
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// A failed leadership transfer is worth a warning only when a live voter
// could have taken over and nobody else leads: not in a whole-cluster
// stop, where every other member goes quiet too.
func TestHandoverMoot(t *testing.T) {
	status := func(role core.Role, leader uint64, progress map[uint64]core.Progress) driver.Status {
		var st driver.Status
		st.ID, st.Role, st.Leader = 1, role, leader
		st.Membership.Voters = []uint64{1, 2, 3}
		st.Progress = progress
		return st
	}
	for _, tc := range []struct {
		name string
		st   driver.Status
		want bool
	}{
		{"still leading with a live voter", status(core.RoleLeader, 1, map[uint64]core.Progress{
			1: {RecentActive: true}, 2: {RecentActive: true}, 3: {}}), false},
		{"still leading, no other voter heard from", status(core.RoleLeader, 1, map[uint64]core.Progress{
			1: {RecentActive: true}, 2: {}, 3: {}}), true},
		{"only a learner is live", status(core.RoleLeader, 1, map[uint64]core.Progress{
			1: {RecentActive: true}, 2: {}, 3: {IsLearner: true, RecentActive: true}}), true},
		{"another member leads", status(core.RoleFollower, 3, nil), true},
		{"stepped down, nobody leads", status(core.RoleFollower, core.None, nil), true},
	} {
		if got := handoverMoot(tc.st); got != tc.want {
			t.Errorf("%s: handoverMoot = %v, want %v", tc.name, got, tc.want)
		}
	}
}
