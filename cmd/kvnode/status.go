package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

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
			"Every endpoint is asked, in parallel. Exit status 1 if any did not answer (its row says why).\n" +
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

// printStatus writes the rows as an aligned table.
func printStatus(out io.Writer, rows []statusRow, hash bool) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	header := "ENDPOINT\tID\tROLE\tTERM\tCOMMIT\tAPPLIED\tLEADER\tDB SIZE"
	if hash {
		header += "\tHASH\tHASH INDEX\tKEYS"
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		if r.err != nil {
			fmt.Fprintf(tw, "%s\t-\tunreachable: %s\n", r.endpoint, describeRPCError(r.err))
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
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s",
			r.endpoint, s.GetMemberId(), role, s.GetTerm(), s.GetCommitIndex(), s.GetAppliedIndex(),
			leader, humanBytes(s.GetDbSizeBytes()))
		if hash {
			fmt.Fprintf(tw, "\t%016x\t%d\t%d", s.GetHash(), s.GetHashIndex(), s.GetHashKeys())
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
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
