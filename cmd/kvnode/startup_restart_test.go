package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// A member that joined under a new ID with an explicit --id (its data
// directory was empty while the others had bootstrapped: chaos seed
// 39666461367001) restarts with the same flags; an explicit --id pointed at
// another member's data is still refused.
func TestPlanRestartExplicitIDAfterJoin(t *testing.T) {
	for _, tc := range []struct {
		name, identName, wantErr string
	}{
		{name: "same name", identName: "node-2"},
		{name: "another member's data", identName: "node-3", wantErr: "--id 2 disagrees with"},
		{name: "no name recorded", identName: "", wantErr: "--id 2 disagrees with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := slog.New(slog.DiscardHandler)
			s := &server{
				cfg:     &serveConfig{ID: 2, IDExplicit: true, Name: "node-2", DataDir: t.TempDir()},
				log:     log,
				cluster: newClusterHandler(1, log, nil),
			}
			p, err := s.planRestart(&identity{ClusterID: 1, NodeID: 4, Name: tc.identName, Incarnation: 7}, core.HardState{Term: 3, Commit: 10})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr == "" && p.id != 4:
				t.Fatalf("starts as member %d, want 4 (the data's)", p.id)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
