package main

import (
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

func TestTransferTarget(t *testing.T) {
	status := func(voters []uint64, progress map[uint64]core.Progress) driver.Status {
		var st driver.Status
		st.ID, st.Role = 1, core.RoleLeader
		st.Membership.Voters = voters
		st.Progress = progress
		return st
	}
	for _, tc := range []struct {
		name string
		st   driver.Status
		want uint64
	}{
		{"most caught up wins", status([]uint64{1, 2, 3}, map[uint64]core.Progress{
			1: {Match: 10}, 2: {Match: 7, RecentActive: true}, 3: {Match: 9, RecentActive: true}}), 3},
		{"tie goes to the lowest ID", status([]uint64{1, 2, 3}, map[uint64]core.Progress{
			1: {Match: 10}, 2: {Match: 9, RecentActive: true}, 3: {Match: 9, RecentActive: true}}), 2},
		{"learners are skipped", status([]uint64{1, 2, 3}, map[uint64]core.Progress{
			1: {Match: 10}, 2: {Match: 3, RecentActive: true}, 3: {Match: 9, IsLearner: true, RecentActive: true}}), 2},
		{"a voter not heard from is skipped", status([]uint64{1, 2, 3}, map[uint64]core.Progress{
			1: {Match: 10}, 2: {Match: 3, RecentActive: true}, 3: {Match: 10}}), 2},
		{"nobody heard from: nobody", status([]uint64{1, 2, 3}, map[uint64]core.Progress{
			1: {Match: 10}, 2: {Match: 10}, 3: {Match: 10}}), core.None},
		{"a cluster of one has nobody", status([]uint64{1}, map[uint64]core.Progress{1: {Match: 10}}), core.None},
		{"a voter without progress is skipped", status([]uint64{1, 2}, map[uint64]core.Progress{1: {Match: 10}}), core.None},
	} {
		if got := transferTarget(tc.st); got != tc.want {
			t.Errorf("%s: transferTarget = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestReadinessBeforeStart(t *testing.T) {
	r := &readiness{node: &nodeRef{}}
	if ok, why := r.check(); ok || why != "starting" {
		t.Fatalf("check before the node exists = %v %q", ok, why)
	}
}
