package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// `kvnode member`: the cluster's membership, through the client Cluster
// service (app/kv/membership.go). Changes go to the leader: a follower's
// refusal names it, and the command follows (to its client address when
// the membership knows it, else to the next endpoint).

// Flags of `kvnode member add`.
const (
	flagLearner = "learner"
)

// maxRedirects bounds the leader redirects one change follows.
const maxRedirects = 4

// memberChangeTimeout is --timeout's default for changes: a removal of
// the leader waits for a leadership transfer and then for the change.
const memberChangeTimeout = 30 * time.Second

func memberCommand() *cli.Command {
	return &cli.Command{
		Name:  "member",
		Usage: "list the cluster's members, add, promote or remove one",
		UsageText: "kvnode member list [--endpoints ...]\n" +
			"kvnode member add NAME --peer-addr HOST:PORT [--client-addr HOST:PORT] [--learner] [--endpoints ...]\n" +
			"kvnode member promote ID [--endpoints ...]\n" +
			"kvnode member remove ID|NAME [--endpoints ...]",
		Commands: []*cli.Command{memberListCommand(), memberAddCommand(), memberPromoteCommand(), memberRemoveCommand()},
		Action: func(_ context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usagef("unknown command \"member %s\" (want list, add, promote or remove)", cmd.Args().First())
			}
			return cli.ShowSubcommandHelp(cmd)
		},
	}
}

// memberFlags are the client flags with a longer --timeout for changes.
func memberFlags(change bool, own ...cli.Flag) []cli.Flag {
	flags := withClientFlags(own...)
	if change {
		for _, f := range flags {
			if d, ok := f.(*cli.DurationFlag); ok && d.Name == flagTimeout {
				d.Value = memberChangeTimeout
				d.Usage = "bound on the whole command: redirects, a leadership transfer and the change becoming active"
			}
		}
	}
	return flags
}

func memberListCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "print every member: ID, name, addresses, voter or learner, leader, match index, lag, reachable",
		UsageText: "kvnode member list [--endpoints HOST:PORT,...]\n\n" +
			"The leader's answer is preferred: only the leader knows MATCH, LAG and REACHABLE. If no endpoint\n" +
			"leads (and the leader's client address is unknown), a follower's view is printed with a note.",
		Flags: memberFlags(false),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 0, 0, "[flags]"); err != nil {
				return err
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				resp, ep, err := listMembers(ctx, c)
				if err != nil {
					return fmt.Errorf("member list: %w", err)
				}
				return printMembers(cmd.Writer, resp, ep)
			})
		}),
	}
}

func memberAddCommand() *cli.Command {
	return &cli.Command{
		Name:  "add",
		Usage: "add a member as a learner, promoted to voter once caught up unless --learner",
		UsageText: "kvnode member add NAME --peer-addr HOST:PORT [--client-addr HOST:PORT] [--learner]\n\n" +
			"Then start the new node with `kvnode serve --join PEER_ADDR,... --name NAME --peer-addr HOST:PORT`\n" +
			"(or let a node with --join add itself: `member add` is optional). Prints the allocated ID.",
		Flags: memberFlags(true,
			&cli.StringFlag{Name: flagPeerAddr, Usage: "the new member's peer address, `HOST:PORT` (required)"},
			&cli.StringFlag{Name: flagClientAddr, Usage: "the new member's client address, `HOST:PORT`"},
			&cli.BoolFlag{Name: flagLearner, Usage: "keep it a learner (no automatic promotion; see member promote)"},
		),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 1, 1, "NAME --peer-addr HOST:PORT"); err != nil {
				return err
			}
			name := strings.TrimSpace(cmd.Args().First())
			if name == "" {
				return usagef("member add: NAME must not be empty")
			}
			peer := cmd.String(flagPeerAddr)
			if peer == "" {
				return usagef("member add: --%s is required", flagPeerAddr)
			}
			if err := checkDialAddr(peer); err != nil {
				return usagef("member add: --%s: %v", flagPeerAddr, err)
			}
			client := cmd.String(flagClientAddr)
			if client != "" {
				if err := checkDialAddr(client); err != nil {
					return usagef("member add: --%s: %v", flagClientAddr, err)
				}
			}
			req := &kvpb.MemberAddRequest{Name: name, PeerAddr: peer, ClientAddr: client, Learner: cmd.Bool(flagLearner)}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				var resp *kvpb.MemberAddResponse
				err := memberChange(ctx, c, func(ctx context.Context, cl kvpb.ClusterClient) error {
					var err error
					resp, err = cl.MemberAdd(ctx, req)
					return err
				})
				if err != nil {
					return fmt.Errorf("member add: %w", err)
				}
				m := resp.GetMember()
				how := "a learner, promoted to voter automatically once caught up"
				if req.Learner {
					how = "a learner (promote it with: kvnode member promote " + strconv.FormatUint(m.GetId(), 10) + ")"
				}
				_, err = fmt.Fprintf(cmd.Writer, "added member %d (%s, peer %s) as %s\n", m.GetId(), m.GetName(), m.GetPeerAddr(), how)
				return err
			})
		}),
	}
}

func memberPromoteCommand() *cli.Command {
	return &cli.Command{
		Name:      "promote",
		Usage:     "make a caught-up learner a voter",
		UsageText: "kvnode member promote ID",
		Flags:     memberFlags(true),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 1, 1, "ID"); err != nil {
				return err
			}
			id, err := parseNodeID(cmd.Args().First())
			if err != nil {
				return usagef("member promote: %v", err)
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				err := memberChange(ctx, c, func(ctx context.Context, cl kvpb.ClusterClient) error {
					_, err := cl.MemberPromote(ctx, &kvpb.MemberPromoteRequest{Id: id})
					return err
				})
				if err != nil {
					return fmt.Errorf("member promote: %w", err)
				}
				_, err = fmt.Fprintf(cmd.Writer, "promoted member %d to voter\n", id)
				return err
			})
		}),
	}
}

func memberRemoveCommand() *cli.Command {
	return &cli.Command{
		Name:  "remove",
		Usage: "remove a member by ID or name (the leader hands leadership over first if it is the one removed)",
		UsageText: "kvnode member remove ID|NAME\n\n" +
			"Remove a member before you stop it for good (scale-down: remove, then kubectl scale).\n" +
			"Its ID is never reused; a node started later with its data directory moves it aside and joins anew.",
		Flags: memberFlags(true),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 1, 1, "ID|NAME"); err != nil {
				return err
			}
			arg := strings.TrimSpace(cmd.Args().First())
			if arg == "" {
				return usagef("member remove: give an ID or a name")
			}
			req := &kvpb.MemberRemoveRequest{Name: arg}
			if id, err := strconv.ParseUint(arg, 10, 64); err == nil {
				if id == 0 {
					return usagef("member remove: node ID 0 is reserved; IDs start at 1")
				}
				req = &kvpb.MemberRemoveRequest{Id: id}
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				var resp *kvpb.MemberRemoveResponse
				err := memberChange(ctx, c, func(ctx context.Context, cl kvpb.ClusterClient) error {
					var err error
					resp, err = cl.MemberRemove(ctx, req)
					return err
				})
				if err != nil {
					return fmt.Errorf("member remove: %w", err)
				}
				m := resp.GetMember()
				_, err = fmt.Fprintf(cmd.Writer, "removed member %d (%s)\n", m.GetId(), m.GetName())
				return err
			})
		}),
	}
}

// clusterTargets is the endpoints of a client plus the leaders' client
// addresses learned from redirects, each with a Cluster client.
type clusterTargets struct {
	c     *kvClient
	addrs []string
	cls   []kvpb.ClusterClient
	extra []*grpc.ClientConn
}

func newClusterTargets(c *kvClient) *clusterTargets {
	t := &clusterTargets{c: c}
	for i, conn := range c.conns {
		t.addrs = append(t.addrs, c.endpoints[i])
		t.cls = append(t.cls, kvpb.NewClusterClient(conn))
	}
	return t
}

// index returns the target of addr, dialling it if it is new.
func (t *clusterTargets) index(addr string) (int, error) {
	if i := slices.Index(t.addrs, addr); i >= 0 {
		return i, nil
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	t.extra = append(t.extra, conn)
	t.addrs = append(t.addrs, addr)
	t.cls = append(t.cls, kvpb.NewClusterClient(conn))
	return len(t.addrs) - 1, nil
}

func (t *clusterTargets) close() {
	for _, conn := range t.extra {
		_ = conn.Close()
	}
}

// memberChange runs a change at the leader: it starts at the preferred
// endpoint, follows NotLeader redirects (to the leader's client address
// when given, else to the next endpoint), passes over endpoints that
// cannot take it (Unavailable), and rounds again after a pause until ctx
// ends. A change is retried elsewhere only when it was certainly not
// carried out (a refusal or no connection).
func memberChange(ctx context.Context, c *kvClient, fn func(context.Context, kvpb.ClusterClient) error) error {
	t := newClusterTargets(c)
	defer t.close()
	last := map[string]error{}
	delay := retryBaseDelay
	redirects := 0
	next := c.preferred
	// blind counts rounds in which every endpoint named a leader whose
	// client address is unknown: the leader is not among the endpoints,
	// and waiting will not change that (unless leadership moves).
	blind := 0
	for {
		tried := 0
		roundBlind := true
		for tried < len(t.addrs) {
			if ctx.Err() != nil {
				return memberGaveUp(ctx, last)
			}
			i := next % len(t.addrs)
			err := fn(ctx, t.cls[i])
			if err == nil {
				return nil
			}
			addr := t.addrs[i]
			if nl, ok := kv.NotLeaderOf(err); ok {
				last[addr] = err
				if nl.GetLeaderClientAddr() != "" {
					roundBlind = false
				}
				if nl.GetLeaderClientAddr() != "" && redirects < maxRedirects {
					if j, derr := t.index(nl.GetLeaderClientAddr()); derr == nil && j != i {
						redirects++
						next = j
						continue
					}
				}
				next, tried = i+1, tried+1
				continue
			}
			if isContextCode(err) && ctx.Err() != nil {
				return memberGaveUp(ctx, last)
			}
			if status.Code(err) != codes.Unavailable || maybeSent(err) {
				return endpointError(addr, err)
			}
			last[addr] = err
			roundBlind = false
			next, tried = i+1, tried+1
		}
		if roundBlind {
			blind++
		} else {
			blind = 0
		}
		if blind >= 3 {
			var leader uint64
			for _, e := range last {
				if nl, ok := kv.NotLeaderOf(e); ok {
					leader = nl.GetLeaderId()
				}
			}
			return fmt.Errorf("every endpoint is a follower of member %d, whose client address the membership does not hold: add its client address to --%s",
				leader, flagEndpoints)
		}
		errs := make([]error, 0, len(last))
		for _, e := range last {
			errs = append(errs, e)
		}
		if len(errs) == len(c.endpoints) {
			if err := c.noneListening(errs); err != nil {
				return err
			}
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return memberGaveUp(ctx, last)
		}
		delay = min(2*delay, retryMaxDelay)
	}
}

// memberGaveUp reports a change that found no leader in time.
func memberGaveUp(ctx context.Context, last map[string]error) error {
	reason := "timed out"
	if ctx.Err() == context.Canceled {
		reason = "cancelled"
	}
	var parts []string
	for addr, err := range last {
		parts = append(parts, addr+": "+describeRPCError(err))
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return fmt.Errorf("%s before any endpoint answered (the change may or may not have been made: check with kvnode member list)", reason)
	}
	return fmt.Errorf("%s without reaching the leader: %s", reason, strings.Join(parts, "; "))
}

// listMembers asks the endpoints for the member list, preferring the
// leader's answer (the only one with progress), and returns the answer
// and the address that gave it.
func listMembers(ctx context.Context, c *kvClient) (*kvpb.MemberListResponse, string, error) {
	t := newClusterTargets(c)
	defer t.close()
	var (
		best     *kvpb.MemberListResponse
		bestAddr string
		last     = make([]error, len(c.endpoints))
	)
	queue := slices.Clone(t.addrs)
	for k := 0; k < len(queue) && k < len(c.endpoints)+maxRedirects; k++ {
		i, err := t.index(queue[k])
		if err != nil {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
		resp, err := t.cls[i].MemberList(actx, &kvpb.MemberListRequest{})
		cancel()
		if err != nil {
			if i < len(last) {
				last[i] = err
			}
			if status.Code(err) == codes.Unimplemented {
				return nil, "", endpointError(t.addrs[i], err)
			}
			continue
		}
		if resp.GetFromLeader() {
			return resp, t.addrs[i], nil
		}
		if best == nil {
			best, bestAddr = resp, t.addrs[i]
		}
		for _, m := range resp.GetMembers() {
			if m.GetLeader() && m.GetClientAddr() != "" && !slices.Contains(queue, m.GetClientAddr()) {
				// Ask the leader next.
				queue = slices.Insert(queue, k+1, m.GetClientAddr())
			}
		}
	}
	if best != nil {
		return best, bestAddr, nil
	}
	if err := c.noneListening(last); err != nil {
		return nil, "", err
	}
	var parts []string
	for i, err := range last {
		if err != nil {
			parts = append(parts, c.endpoints[i]+": "+describeRPCError(err))
		}
	}
	return nil, "", fmt.Errorf("no endpoint answered: %s", strings.Join(parts, "; "))
}

// printMembers writes the member table, and a note when the answer came
// from a follower.
func printMembers(out io.Writer, resp *kvpb.MemberListResponse, from string) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPEER ADDR\tCLIENT ADDR\tROLE\tLEADER\tMATCH\tLAG\tREACHABLE")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, m := range resp.GetMembers() {
		role := "voter"
		switch {
		case m.GetOutgoing():
			role = "voter (outgoing)"
		case m.GetLearner() && m.GetAutoPromote():
			role = "learner (auto-promote)"
		case m.GetLearner():
			role = "learner"
		}
		if m.GetReplaces() != 0 && m.GetLearner() {
			role += fmt.Sprintf(" replacing %d", m.GetReplaces())
		}
		leader := ""
		if m.GetLeader() {
			leader = "*"
		}
		match, lag, reach := "-", "-", "-"
		if m.GetProgressKnown() {
			match, lag = strconv.FormatUint(m.GetMatchIndex(), 10), strconv.FormatUint(m.GetLag(), 10)
			reach = "no"
			if m.GetReachable() {
				reach = "yes"
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.GetId(), dash(m.GetName()), dash(m.GetPeerAddr()),
			dash(m.GetClientAddr()), role, dash(leader), match, lag, reach)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	if resp.GetJoint() {
		notes = append(notes, "a joint configuration is active: a change of several voters is under way (the leader completes it by itself)")
	}
	if !resp.GetFromLeader() {
		who := "no leader is known"
		if resp.GetLeaderId() != 0 {
			who = fmt.Sprintf("the leader is member %d, whose client address is not among --%s", resp.GetLeaderId(), flagEndpoints)
		}
		notes = append(notes, fmt.Sprintf("answered by member %d at %s, a follower (%s): MATCH, LAG and REACHABLE are known only to the leader",
			resp.GetHeader().GetMemberId(), from, who))
	}
	if len(notes) > 0 {
		_, err := fmt.Fprintf(out, "\n%s\n", strings.Join(notes, "\n"))
		return err
	}
	return nil
}
