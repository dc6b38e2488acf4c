package core_test

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

var rewriteScenarios = flag.Bool("rewrite", false, "rewrite testdata/scenarios with the actual output")

// TestScenarios replays protocol transcripts in testdata/scenarios. Each
// file is a list of commands ("> cmd args") each followed by the exact
// output it must produce: the messages delivered, entries applied and
// read states, in order. Run with -rewrite to regenerate after an
// intended change, then read the diff: it is a protocol trace.
//
// Commands:
//
//	cluster N [prevote=off] [checkquorum=off]   start an N-node cluster
//	campaign ID          tick node ID until its election timer fires
//	tick ID...           tick the given nodes once ("tick all" for every node)
//	ticks N ID...        tick the given nodes N times, each round followed
//	                     by a silent stabilize ("all" for every node)
//	stabilize            deliver messages and process Readies until quiet
//	propose ID DATA      Propose on node ID
//	read ID REQID        ReadIndex on node ID
//	transfer ID TO       TransferLeadership on node ID
//	isolate ID           drop every message to and from node ID
//	heal                 stop dropping messages
//	status               one line per node
//	join ID              start node ID as a joiner (empty storage, no membership)
//	conf ID OP:N...      ProposeConfChange on node ID; OP is learner, voter,
//	                     promote or remove (several OPs make one change)
//	members              each node's active configuration
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/scenarios/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { runScenario(t, file) })
	}
}

type scenarioStep struct {
	cmd  string
	want []string
}

func parseScenario(t *testing.T, file string) []scenarioStep {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []scenarioStep
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "> "):
			steps = append(steps, scenarioStep{cmd: strings.TrimPrefix(line, "> ")})
		case strings.HasPrefix(line, "#") || (line == "" && len(steps) == 0):
		case len(steps) > 0 && line != "":
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return steps
}

func runScenario(t *testing.T, file string) {
	steps := parseScenario(t, file)
	var c *cluster
	var rewritten strings.Builder
	header, _ := os.ReadFile(file)
	for _, line := range strings.Split(string(header), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		rewritten.WriteString(line + "\n")
	}
	for _, st := range steps {
		got := runScenarioCommand(t, &c, st.cmd)
		fmt.Fprintf(&rewritten, "\n> %s\n", st.cmd)
		for _, g := range got {
			rewritten.WriteString(g + "\n")
		}
		if !*rewriteScenarios && !slices.Equal(got, st.want) {
			t.Fatalf("%s: > %s\ngot:\n  %s\nwant:\n  %s", file, st.cmd,
				strings.Join(got, "\n  "), strings.Join(st.want, "\n  "))
		}
	}
	if *rewriteScenarios {
		if err := os.WriteFile(file, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func runScenarioCommand(t *testing.T, cp **cluster, cmd string) []string {
	f := strings.Fields(cmd)
	arg := func(i int) uint64 {
		if i >= len(f) {
			t.Fatalf("%q: missing argument %d", cmd, i)
		}
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			t.Fatalf("%q: %v", cmd, err)
		}
		return v
	}
	c := *cp
	if f[0] != "cluster" && c == nil {
		t.Fatalf("%q before cluster", cmd)
	}
	errLine := func(err error) []string {
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		return nil
	}
	switch f[0] {
	case "cluster":
		opts := f[2:]
		*cp = newCluster(t, int(arg(1)), func(cfg *core.Config) {
			for _, o := range opts {
				switch o {
				case "prevote=off":
					cfg.PreVote = false
				case "checkquorum=off":
					cfg.CheckQuorum = false
				default:
					t.Fatalf("unknown cluster option %q", o)
				}
			}
		})
		return nil
	case "campaign":
		n := c.nodes[arg(1)]
		for range 1000 {
			if err := n.Tick(); err != nil {
				t.Fatal(err)
			}
			if n.HasReady() {
				return nil
			}
		}
		t.Fatalf("node %d never campaigned", arg(1))
	case "ticks":
		var out []string
		for range arg(1) {
			runScenarioCommand(t, cp, "tick "+strings.Join(f[2:], " "))
			out = append(out, scenarioStabilize(c)...)
		}
		// Summarise: heartbeats every tick would drown the transcript.
		return summariseDeliveries(out)
	case "tick":
		ids := f[1:]
		if len(ids) == 1 && ids[0] == "all" {
			ids = nil
			for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
				ids = append(ids, strconv.FormatUint(id, 10))
			}
		}
		for _, s := range ids {
			id, _ := strconv.ParseUint(s, 10, 64)
			if err := c.nodes[id].Tick(); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	case "stabilize":
		return scenarioStabilize(c)
	case "propose":
		return errLine(c.nodes[arg(1)].Propose([]byte(f[2])))
	case "read":
		return errLine(c.nodes[arg(1)].ReadIndex(arg(2)))
	case "transfer":
		return errLine(c.nodes[arg(1)].TransferLeadership(arg(2)))
	case "isolate":
		id := arg(1)
		c.drop = func(m core.Message) bool { return m.From == id || m.To == id }
		return nil
	case "heal":
		c.drop = nil
		return nil
	case "join":
		c.addJoiner(arg(1), nil)
		c.tolerateInvalid = true // removed members' messages are refused
		return nil
	case "conf":
		var cc core.ConfChange
		for _, op := range f[2:] {
			kind, num, _ := strings.Cut(op, ":")
			id, err := strconv.ParseUint(num, 10, 64)
			if err != nil {
				t.Fatalf("%q: %v", cmd, err)
			}
			switch kind {
			case "learner":
				cc.Ops = append(cc.Ops, addLearner(id))
			case "voter":
				cc.Ops = append(cc.Ops, addVoter(id))
			case "promote":
				cc.Ops = append(cc.Ops, promote(id))
			case "remove":
				cc.Ops = append(cc.Ops, remove(id))
			default:
				t.Fatalf("%q: unknown operation %q", cmd, kind)
			}
		}
		idx, err := c.nodes[arg(1)].ProposeConfChange(cc)
		if err != nil {
			return errLine(err)
		}
		return []string{fmt.Sprintf("proposed %v at index %d", cc, idx)}
	case "members":
		var out []string
		for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
			st := c.nodes[id].Status()
			m := st.Membership
			line := fmt.Sprintf("%d: voters=%v", id, m.Voters)
			if m.IsJoint() {
				line += fmt.Sprintf(" outgoing=%v", m.OutgoingVoters)
			}
			if len(m.Learners) > 0 {
				line += fmt.Sprintf(" learners=%v", m.Learners)
			}
			line += fmt.Sprintf(" conf-index=%d", st.ConfIndex)
			if st.Removed {
				line += " removed"
			}
			out = append(out, line)
		}
		return out
	case "status":
		var out []string
		for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
			st := c.nodes[id].Status()
			out = append(out, fmt.Sprintf("%d: %s term=%d lead=%d commit=%d applied=%d last=%d",
				id, st.Role, st.Term, st.Leader, st.Commit, st.Applied, st.LastIndex))
		}
		return out
	}
	t.Fatalf("unknown command %q", cmd)
	return nil
}

// scenarioStabilize runs the cluster to quiescence, reporting deliveries,
// drops, applied entries and read states as they happen.
func scenarioStabilize(c *cluster) []string {
	var out []string
	for range 1000 {
		did := false
		for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
			nApplied, nReads := len(c.applied[id]), len(c.reads[id])
			if c.process(id) {
				did = true
			}
			for _, e := range c.applied[id][nApplied:] {
				if e.Type == core.EntryConfChange {
					cc, err := core.UnmarshalConfChange(e.Data)
					out = append(out, fmt.Sprintf("  %d applies %d/%d conf %v%s", id, e.Term, e.Index, cc, errSuffix(err)))
					continue
				}
				out = append(out, fmt.Sprintf("  %d applies %d/%d %q", id, e.Term, e.Index, e.Data))
			}
			for _, rs := range c.reads[id][nReads:] {
				out = append(out, fmt.Sprintf("  %d read %d at index %d err=%v", id, rs.RequestID, rs.Index, rs.Err))
			}
		}
		if len(c.queue) == 0 && !did {
			return out
		}
		q := c.queue
		c.queue = nil
		for _, m := range q {
			if c.drop != nil && c.drop(m) {
				out = append(out, "dropped "+m.String())
				continue
			}
			out = append(out, m.String())
			c.deliver(m)
		}
	}
	c.t.Fatal("scenario did not stabilize")
	return nil
}

func errSuffix(err error) string {
	if err != nil {
		return " (" + err.Error() + ")"
	}
	return ""
}

// summariseDeliveries keeps every line except heartbeats and their
// responses, which it counts.
func summariseDeliveries(lines []string) []string {
	var out []string
	heartbeats := 0
	for _, l := range lines {
		if strings.Contains(l, "MsgHeartbeat") {
			heartbeats++
			continue
		}
		out = append(out, l)
	}
	if heartbeats > 0 {
		out = append(out, fmt.Sprintf("(%d heartbeat messages)", heartbeats))
	}
	return out
}
