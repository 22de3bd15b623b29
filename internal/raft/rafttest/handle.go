package rafttest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/skiffdb/skiff/internal/raft"
	"github.com/skiffdb/skiff/raftpb"
)

// Handle runs one datadriven command and returns what it printed. Errors
// of the system under test (a refused proposal, say) are printed as
// "error: ..."; a malformed command fails t.
func (env *Env) Handle(t testing.TB, d *datadriven.TestData) string {
	t.Helper()
	env.Out.Reset()
	if err := env.handle(t, d); err != nil {
		env.printf("error: %v\n", err)
	}
	s := env.Out.String()
	env.Out.Reset()
	if s == "" {
		return "ok"
	}
	return s
}

func (env *Env) handle(t testing.TB, d *datadriven.TestData) error {
	t.Helper()
	switch d.Cmd {
	case "add-nodes":
		return env.handleAddNodes(t, d)
	case "campaign":
		env.mustNode(t, d, 0).Campaign()
	case "tick-election":
		n := env.mustNode(t, d, 0)
		ticks := 2*n.Config.ElectionTicks - 1
		if n.Status().SoftState.Role == raft.Leader {
			ticks = n.Config.ElectionTicks
		}
		env.tick(n, ticks)
	case "tick-heartbeat":
		n := env.mustNode(t, d, 0)
		env.tick(n, n.Config.HeartbeatTicks)
	case "tick":
		count := 1
		d.MaybeScanArgs(t, "n", &count)
		env.tick(env.mustNode(t, d, 0), count)
	case "propose":
		// propose id data... proposes one entry per data argument, in a
		// single batch.
		n := env.mustNode(t, d, 0)
		if len(d.CmdArgs) < 2 {
			d.Fatalf(t, "propose id data...")
		}
		var ents []raftpb.Entry
		for _, arg := range d.CmdArgs[1:] {
			ents = append(ents, raftpb.Entry{Data: []byte(arg.Key)})
		}
		return n.Propose(ents...)
	case "propose-conf-change":
		// propose-conf-change id v4 r2 [/ l5 ...]: "/" separates config
		// changes proposed together in one batch.
		n := env.mustNode(t, d, 0)
		var ents []raftpb.Entry
		args := d.CmdArgs[1:]
		for {
			i := slices.IndexFunc(args, func(a datadriven.CmdArg) bool { return a.Key == "/" })
			if i < 0 {
				i = len(args)
			}
			cc, err := parseConfChange(args[:i])
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			ents = append(ents, raftpb.Entry{Type: raftpb.EntryConfigChange, Data: cc.Marshal()})
			if i == len(args) {
				break
			}
			args = args[i+1:]
		}
		if len(ents) == 1 {
			var cc raftpb.ConfChange
			if err := cc.Unmarshal(ents[0].Data); err != nil {
				return err
			}
			return n.ProposeConfigChange(cc)
		}
		return n.Propose(ents...)
	case "process-ready":
		for _, id := range env.ids(t, d) {
			if len(d.CmdArgs) > 1 {
				env.printf("> %d handling Ready\n", id)
			}
			sub := env.Out.Len()
			ok, err := env.ProcessReady(id)
			if err != nil {
				return err
			}
			if !ok {
				env.printf("<no Ready>\n")
			}
			if len(d.CmdArgs) > 1 {
				env.indentFrom(sub)
			}
		}
	case "deliver-msgs":
		f := env.msgFilter(t, d)
		var n int
		if arg, ok := d.Arg("drop"); ok {
			f.To = parseIDs(t, d, arg.Vals)
			n = env.DropMsgs(f)
		} else {
			n = env.DeliverMsgs(f)
		}
		if n == 0 {
			env.printf("no messages\n")
		}
	case "duplicate-msgs":
		if env.DuplicateMsgs(env.msgFilter(t, d)) == 0 {
			env.printf("no messages\n")
		}
	case "stabilize":
		return env.Stabilize(env.ids(t, d)...)
	case "status":
		env.Out.WriteString(DescribeStatus(env.mustNode(t, d, 0).Status()))
	case "raft-log":
		s, err := env.RaftLog(env.mustNode(t, d, 0).ID())
		env.Out.WriteString(s)
		return err
	case "compact":
		n := env.mustNode(t, d, 0)
		return env.Compact(n.ID(), env.uintArg(t, d, 1))
	case "snapshot-unavailable":
		env.mustNode(t, d, 0).Log.SnapshotUnavailable = int(env.uintArg(t, d, 1))
	case "install-snapshot":
		return env.InstallSnapshot(env.mustNode(t, d, 0).ID())
	case "install-failed":
		return env.InstallFailed(env.mustNode(t, d, 0).ID())
	case "report-unreachable":
		n := env.mustNode(t, d, 0)
		to := raftpb.ReplicaID(env.uintArg(t, d, 1))
		return n.Step(raftpb.Message{Type: raftpb.MsgUnreachable, Group: Group, From: to, To: n.ID()})
	case "partition":
		env.Partition(parseSides(t, d))
	case "heal":
		env.Partition(nil)
	case "transfer-leadership":
		n := env.mustNode(t, d, 0)
		n.TransferLeader(raftpb.ReplicaID(env.uintArg(t, d, 1)))
	case "read-index":
		n := env.mustNode(t, d, 0)
		if len(d.CmdArgs) < 2 {
			d.Fatalf(t, "read-index id ctx")
		}
		n.ReadIndex([]byte(d.CmdArgs[1].Key))
	case "crash-after-send":
		return env.CrashAfterSend(env.mustNode(t, d, 0).ID())
	case "restart":
		return env.Restart(env.mustNode(t, d, 0).ID())
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	return nil
}

func (env *Env) tick(n *Node, count int) {
	for range count {
		n.Tick()
	}
}

func (env *Env) handleAddNodes(t testing.TB, d *datadriven.TestData) error {
	count := int(env.uintArg(t, d, 0))
	var opts NodeOptions
	for _, arg := range d.CmdArgs[1:] {
		var err error
		switch arg.Key {
		case "voters":
			opts.Voters = parseIDs(t, d, arg.Vals)
		case "learners":
			opts.Learners = parseIDs(t, d, arg.Vals)
		case "index":
			opts.Index, err = strconv.ParseUint(arg.SingleVal(t), 10, 64)
		case "prevote":
			opts.Config.PreVote, err = strconv.ParseBool(arg.SingleVal(t))
		case "checkquorum":
			opts.Config.CheckQuorum, err = strconv.ParseBool(arg.SingleVal(t))
		case "lease":
			var lease bool
			lease, err = strconv.ParseBool(arg.SingleVal(t))
			if lease {
				opts.Config.ReadOnly = raft.ReadOnlyLeaseBased
			}
		case "forwarding":
			var fwd bool
			fwd, err = strconv.ParseBool(arg.SingleVal(t))
			opts.Config.DisableProposalForwarding = !fwd
		case "election":
			opts.Config.ElectionTicks, err = strconv.Atoi(arg.SingleVal(t))
		case "heartbeat":
			opts.Config.HeartbeatTicks, err = strconv.Atoi(arg.SingleVal(t))
		case "max-inflight":
			opts.Config.MaxInflightMsgs, err = strconv.Atoi(arg.SingleVal(t))
		case "max-inflight-bytes":
			opts.Config.MaxInflightBytes, err = strconv.ParseUint(arg.SingleVal(t), 10, 64)
		case "max-msg-bytes":
			opts.Config.MaxMsgBytes, err = strconv.ParseUint(arg.SingleVal(t), 10, 64)
		case "snapshot-timeout":
			opts.Config.SnapshotTimeoutTicks, err = strconv.Atoi(arg.SingleVal(t))
		default:
			d.Fatalf(t, "add-nodes: unknown argument %q", arg.Key)
		}
		if err != nil {
			d.Fatalf(t, "add-nodes %s: %v", arg.Key, err)
		}
	}
	first := len(env.Nodes) + 1
	if err := env.AddNodes(count, opts); err != nil {
		return err
	}
	for id := first; id <= len(env.Nodes); id++ {
		env.Out.WriteString(DescribeStatus(env.Nodes[id-1].Status()))
	}
	return nil
}

// mustNode returns the replica named by positional argument i.
func (env *Env) mustNode(t testing.TB, d *datadriven.TestData, i int) *Node {
	t.Helper()
	id := raftpb.ReplicaID(env.uintArg(t, d, i))
	n := env.Node(id)
	if n == nil {
		d.Fatalf(t, "no replica %d", id)
	}
	return n
}

// uintArg parses positional argument i as a number.
func (env *Env) uintArg(t testing.TB, d *datadriven.TestData, i int) uint64 {
	t.Helper()
	if i >= len(d.CmdArgs) || len(d.CmdArgs[i].Vals) != 0 {
		d.Fatalf(t, "%s: missing positional argument %d", d.Cmd, i+1)
	}
	v, err := strconv.ParseUint(d.CmdArgs[i].Key, 10, 64)
	if err != nil {
		d.Fatalf(t, "%s: argument %d: %v", d.Cmd, i+1, err)
	}
	return v
}

// ids returns the positional replica IDs of d, or every replica if none.
func (env *Env) ids(t testing.TB, d *datadriven.TestData) []raftpb.ReplicaID {
	t.Helper()
	var ids []raftpb.ReplicaID
	for i, arg := range d.CmdArgs {
		if len(arg.Vals) != 0 {
			continue
		}
		ids = append(ids, raftpb.ReplicaID(env.uintArg(t, d, i)))
		if env.Node(ids[len(ids)-1]) == nil {
			d.Fatalf(t, "no replica %s", arg.Key)
		}
	}
	if len(ids) == 0 {
		for i := range env.Nodes {
			ids = append(ids, raftpb.ReplicaID(i+1))
		}
	}
	return ids
}

// msgFilter reads the positional recipients and type= of d.
func (env *Env) msgFilter(t testing.TB, d *datadriven.TestData) MsgFilter {
	t.Helper()
	var f MsgFilter
	for i, arg := range d.CmdArgs {
		if len(arg.Vals) == 0 {
			f.To = append(f.To, raftpb.ReplicaID(env.uintArg(t, d, i)))
		}
	}
	d.MaybeScanArgs(t, "n", &f.Limit)
	if arg, ok := d.Arg("from"); ok {
		f.From = parseIDs(t, d, arg.Vals)
	}
	if arg, ok := d.Arg("type"); ok {
		name := arg.SingleVal(t)
		for mt := range raftpb.NumMessageTypes {
			if raftpb.MessageType(mt).String() == name {
				typ := raftpb.MessageType(mt)
				f.Type = &typ
			}
		}
		if f.Type == nil {
			d.Fatalf(t, "unknown message type %q", name)
		}
	}
	return f
}

func parseIDs(t testing.TB, d *datadriven.TestData, vals []string) []raftpb.ReplicaID {
	t.Helper()
	ids := make([]raftpb.ReplicaID, 0, len(vals))
	for _, v := range vals {
		id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			d.Fatalf(t, "bad replica ID %q", v)
		}
		ids = append(ids, raftpb.ReplicaID(id))
	}
	return ids
}

// parseSides reads "partition (1) (2 3)": the line parser splits at spaces,
// so the argument keys are joined back and split at parentheses.
func parseSides(t testing.TB, d *datadriven.TestData) [][]raftpb.ReplicaID {
	t.Helper()
	var keys []string
	for _, arg := range d.CmdArgs {
		keys = append(keys, arg.Key)
	}
	var sides [][]raftpb.ReplicaID
	for _, group := range strings.Split(strings.Join(keys, " "), ")") {
		group = strings.TrimSpace(group)
		if group == "" {
			continue
		}
		inner, ok := strings.CutPrefix(group, "(")
		if !ok {
			d.Fatalf(t, "partition: want groups like (1) (2 3), got %q", group)
		}
		sides = append(sides, parseIDs(t, d, strings.FieldsFunc(inner, func(r rune) bool { return r == ' ' || r == ',' })))
	}
	return sides
}

// parseConfChange reads "v4 l5 r2 [transition=auto|implicit|explicit]";
// no changes means leaving the joint configuration.
func parseConfChange(args []datadriven.CmdArg) (raftpb.ConfChange, error) {
	var cc raftpb.ConfChange
	for _, arg := range args {
		if arg.Key == "transition" {
			if len(arg.Vals) != 1 {
				return cc, fmt.Errorf("transition needs one value")
			}
			switch arg.Vals[0] {
			case "auto":
				cc.Transition = raftpb.TransitionAuto
			case "implicit":
				cc.Transition = raftpb.TransitionJointImplicit
			case "explicit":
				cc.Transition = raftpb.TransitionJointExplicit
			default:
				return cc, fmt.Errorf("unknown transition %q", arg.Vals[0])
			}
			continue
		}
		if arg.Key == "leave-joint" {
			continue
		}
		if len(arg.Key) < 2 {
			return cc, fmt.Errorf("bad change %q", arg.Key)
		}
		id, err := strconv.ParseUint(arg.Key[1:], 10, 64)
		if err != nil {
			return cc, fmt.Errorf("bad change %q: %v", arg.Key, err)
		}
		c := raftpb.ConfChangeSingle{Replica: raftpb.ReplicaID(id)}
		switch arg.Key[0] {
		case 'v':
			c.Type = raftpb.AddVoter
		case 'l':
			c.Type = raftpb.AddNonVoter
		case 'r':
			c.Type = raftpb.RemoveReplica
		default:
			return cc, fmt.Errorf("bad change %q: want v<id>, l<id> or r<id>", arg.Key)
		}
		cc.Changes = append(cc.Changes, c)
	}
	return cc, nil
}
