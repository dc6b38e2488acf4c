package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/urfave/cli/v3"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
)

// `kvnode recover --force-new-cluster`: the last resort when a quorum is
// gone for good. See docs/operations.md, "Lost quorum".

const flagForceNewCluster = "force-new-cluster"

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "recover",
		Usage: "offline: make a stopped member's data directory a cluster of that member alone (lost quorum, last resort)",
		UsageText: "kvnode recover --force-new-cluster --data-dir DIR [--id N]\n\n" +
			"Run on ONE survivor's data directory, with its kvnode stopped, when a quorum of voters is lost\n" +
			"forever. It keeps the committed log, drops entries that were never committed, and appends one\n" +
			"configuration entry that makes this member the only voter (its ID, name and addresses kept; IDs\n" +
			"of the lost members are never reused). Start it with serve as before: it leads alone and serves\n" +
			"reads and writes; grow the cluster again with new nodes started with --join. Writes the other\n" +
			"members acknowledged but this one never received are lost: pick the survivor with the highest\n" +
			"commit index (kvnode status, or the logs). Never run it while the cluster can still elect a leader.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: flagForceNewCluster, Usage: "required: says you mean it"},
			&cli.StringFlag{Name: flagDataDir, Sources: env(flagDataDir), Value: defaultDataDir, TakesFile: true,
				Usage: "the stopped member's data directory"},
			&cli.StringFlag{Name: flagID, Usage: "this member's ID, for a data directory without an identity file (older kvnode)"},
		},
		Action: action(func(_ context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 0, 0, "--force-new-cluster --data-dir DIR"); err != nil {
				return err
			}
			if !cmd.Bool(flagForceNewCluster) {
				return usagef("recover: --%s is required: this rewrites the membership to this member alone", flagForceNewCluster)
			}
			var id uint64
			if s := cmd.String(flagID); s != "" {
				v, err := parseNodeID(s)
				if err != nil {
					return usagef("--%s: %v", flagID, err)
				}
				id = v
			}
			res, err := forceNewCluster(cmd.String(flagDataDir), id)
			if err != nil {
				return fmt.Errorf("recover: %w", err)
			}
			_, err = fmt.Fprintf(cmd.Writer,
				"recovered %s as a cluster of member %d (%s) alone: kept the log up to commit index %d (dropped %d uncommitted entries), "+
					"appended the new configuration at index %d, term %d (was %d); former voters %s\n",
				cmd.String(flagDataDir), res.id, orDash(res.name), res.commit, res.dropped, res.index, res.term, res.oldTerm, joinIDs(res.oldVoters))
			return err
		}),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// recoverReadBytes bounds one page of log entries read while finding
// the configuration at the commit index.
const recoverReadBytes = 4 << 20

// recovered describes what forceNewCluster did.
type recovered struct {
	id                    uint64
	name                  string
	commit, index         uint64
	term, oldTerm         uint64
	dropped               uint64
	oldVoters             []uint64
	membership, newConfig core.Membership
}

// forceNewCluster rewrites the Raft state in dir (a stopped member's
// data directory) so that the member is the only voter: it appends, at
// commit+1 and term+1, an EntryConfChange replacing the configuration
// with this member alone (its MemberInfo kept, HighestID unchanged, so
// the lost members' IDs are never reused), and saves the hard state
// {term+1, vote self, commit that index}. Saving at commit+1 supersedes
// whatever uncommitted entries followed. The WAL's directory lock makes
// it fail while the member runs.
func forceNewCluster(dir string, id uint64) (recovered, error) {
	var r recovered
	ident, err := readIdentity(dir)
	if err != nil {
		return r, err
	}
	switch {
	case ident != nil && ident.NodeID == 0:
		return r, fmt.Errorf("%s holds a member that never finished joining: nothing to recover", dir)
	case ident != nil && id != 0 && id != ident.NodeID:
		return r, fmt.Errorf("--%s %d disagrees with the identity file of %s (member %d)", flagID, id, dir, ident.NodeID)
	case ident != nil:
		id = ident.NodeID
	case id == 0:
		return r, fmt.Errorf("%s has no identity file: give the member's --%s", dir, flagID)
	}
	r.id = id
	opts := disk.DefaultOptions()
	opts.Logger = slog.New(slog.DiscardHandler)
	wal, err := disk.Open(filepath.Join(dir, "raft"), opts)
	if err != nil {
		if errors.Is(err, disk.ErrLocked) {
			return r, fmt.Errorf("%s is in use: stop its kvnode first (%v)", dir, err)
		}
		return r, fmt.Errorf("opening the write-ahead log: %w", err)
	}
	defer wal.Close()
	hs, snap, err := wal.InitialState()
	if err != nil {
		return r, err
	}
	last, err := wal.LastIndex()
	if err != nil {
		return r, err
	}
	if hs.IsZero() && snap.IsEmpty() && last == 0 {
		return r, fmt.Errorf("%s holds no Raft state: nothing to recover", dir)
	}
	commit := max(hs.Commit, snap.Index)
	// The configuration active at the commit index, read in bounded pages
	// by the same code a starting node uses (entries that never applied
	// are skipped alike).
	m, _, err := core.MembershipAt(wal, commit, recoverReadBytes)
	if err != nil {
		return r, fmt.Errorf("reading the configuration at commit index %d: %w", commit, err)
	}
	if m.IsEmpty() {
		return r, fmt.Errorf("no membership is known at commit index %d", commit)
	}
	if !m.Contains(id) {
		return r, fmt.Errorf("member %d is not in the configuration at commit index %d (voters %s): it was removed, or this is another member's data", id, commit, joinIDs(m.Voters))
	}
	self, _ := m.Info(id)
	self.AutoPromote, self.Replaces = false, core.None
	alone := core.Membership{Voters: []uint64{id}, Members: []core.MemberInfo{self}}
	// Apply keeps HighestID at the largest ID ever used, so the lost
	// members' IDs are never reused; write exactly what it computes.
	alone, err = m.Apply(core.ConfChange{Replace: &alone})
	if err != nil {
		return r, fmt.Errorf("the new configuration is invalid: %w", err)
	}
	term := max(hs.Term, snap.Term) + 1
	entry := core.Entry{Index: commit + 1, Term: term, Type: core.EntryConfChange, Data: core.ConfChange{Replace: &alone}.Marshal()}
	if err := wal.Save(core.HardState{Term: term, Vote: id, Commit: entry.Index}, []core.Entry{entry}); err != nil {
		return r, fmt.Errorf("writing the new configuration: %w", err)
	}
	r.name, r.commit, r.index, r.term, r.oldTerm = self.Name, commit, entry.Index, term, hs.Term
	if last > commit {
		r.dropped = last - commit
	}
	r.oldVoters, r.membership, r.newConfig = m.Voters, m, alone
	return r, wal.Close()
}
