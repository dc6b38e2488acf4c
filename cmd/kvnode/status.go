package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

const flagHash = "hash"

// statusCommand is `kvnode status`: one row per endpoint with that
// member's view of the cluster.
func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "print a table of every endpoint's member: ID, role, term, commit, applied, leader, DB size",
		UsageText: "kvnode status [--hash] [--endpoints HOST:PORT,...]\n\n" +
			"Every endpoint is asked, in parallel. Exit status 1 if any did not answer (the reasons follow the table).\n" +
			"APPLIED marked * is above COMMIT: the member read the two a moment apart while applying (see the note).\n" +
			"With --hash each member also digests its whole key space; members whose HASH INDEX\n" +
			"is equal hold the same data exactly when their HASH is equal.",
		Flags: withClientFlags(
			&cli.BoolFlag{Name: flagHash, Usage: "add a digest of each member's key space (reads every key)"},
		),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 0, 0, "[flags]"); err != nil {
				return err
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				rows := memberStatuses(ctx, c, cmd.Bool(flagHash))
				if err := printStatus(cmd.Writer, rows, cmd.Bool(flagHash)); err != nil {
					return err
				}
				failed := 0
				for _, r := range rows {
					if r.err != nil {
						failed++
					}
				}
				if failed > 0 {
					return fmt.Errorf("status: %d of %d endpoints did not answer", failed, len(rows))
				}
				return nil
			})
		}),
	}
}

// statusRow is one endpoint's answer or failure.
type statusRow struct {
	endpoint string
	resp     *kvpb.StatusResponse
	err      error
}

// memberStatuses asks every endpoint at once, so one unreachable member
// costs one timeout, not one per member.
func memberStatuses(ctx context.Context, c *kvClient, hash bool) []statusRow {
	rows := make([]statusRow, len(c.endpoints))
	var wg sync.WaitGroup
	for i, kv := range c.clients {
		rows[i].endpoint = c.endpoints[i]
		wg.Go(func() {
			resp, err := kv.Status(ctx, &kvpb.StatusRequest{Hash: hash})
			rows[i].resp, rows[i].err = resp, err
		})
	}
	wg.Wait()
	return rows
}

// printStatus writes the rows as an aligned table, then notes: why each
// unreachable endpoint did not answer, and why a row shows applied above
// commit.
//
// The Status RPC reads the commit index from the state the member's Raft
// loop published after its last batch of work, and the applied index
// from the state machine, which the batch in progress may have advanced
// already: the loop learns a new commit index, applies the entries it
// covers, and only then publishes. For that moment applied is ahead of
// the commit shown, though never of the member's real commit index (an
// entry is applied only once committed). The row is marked rather than
// altered: both numbers are what the member said.
func printStatus(out io.Writer, rows []statusRow, hash bool) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	header := "ENDPOINT\tID\tROLE\tTERM\tCOMMIT\tAPPLIED\tLEADER\tDB SIZE"
	cols := 8
	if hash {
		header += "\tHASH\tHASH INDEX\tKEYS"
		cols += 3
	}
	fmt.Fprintln(tw, header)
	var notes []string
	ahead := false
	for _, r := range rows {
		if r.err != nil {
			// Every column filled, so that tabwriter keeps the table's
			// columns aligned across this row.
			fmt.Fprintf(tw, "%s\t-\t%s%s\n", r.endpoint, failedRole(r.err), strings.Repeat("\t-", cols-3))
			notes = append(notes, fmt.Sprintf("%s: %s", r.endpoint, describeRPCError(r.err)))
			continue
		}
		s := r.resp
		leader := "none"
		if s.GetLeader() != 0 {
			leader = strconv.FormatUint(s.GetLeader(), 10)
		}
		role := s.GetRole()
		if s.GetDiskStalled() {
			role += fmt.Sprintf(" (disk stalled %v)", time.Duration(s.GetDiskWriteBlockedMs())*time.Millisecond)
		}
		applied := strconv.FormatUint(s.GetAppliedIndex(), 10)
		if s.GetAppliedIndex() > s.GetCommitIndex() {
			applied += "*"
			ahead = true
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s",
			r.endpoint, s.GetMemberId(), role, s.GetTerm(), s.GetCommitIndex(), applied,
			leader, humanBytes(s.GetDbSizeBytes()))
		if hash {
			fmt.Fprintf(tw, "\t%016x\t%d\t%d", s.GetHash(), s.GetHashIndex(), s.GetHashKeys())
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if ahead {
		notes = append(notes, "* applied above commit: the member applied newly committed entries between publishing "+
			"its commit index and answering; entries are applied only once committed, so its commit is at least its applied index")
	}
	if len(notes) > 0 {
		_, err := fmt.Fprintf(out, "\n%s\n", strings.Join(notes, "\n"))
		return err
	}
	return nil
}

// failedRole is the ROLE cell of an endpoint that gave no status:
// "unreachable" when no answer came, "error" when one did, but not a
// status (a metrics port, say, or a server that is not kvnode).
func failedRole(err error) string {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return "unreachable"
	}
	return "error"
}

// humanBytes formats a size with a binary unit (1.5 MiB).
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
