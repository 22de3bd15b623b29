package rafttest

import (
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/internal/raft"
	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/raftpb"
)

// These helpers render core types in one compact line each. They live here,
// not in raftpb, because the layout is a test concern: scripts pin it down,
// and changing it means regenerating them with -rewrite.

// DescribeEntry renders an entry as "term/index Type [payload]", e.g.
// `1/11 EntryNormal "x"` or `2/12 EntryConfigChange v4 r2`.
func DescribeEntry(e raftpb.Entry) string {
	s := fmt.Sprintf("%d/%d Entry%s", e.Term, e.Index, e.Type)
	switch e.Type {
	case raftpb.EntryConfigChange:
		var cc raftpb.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			return s + fmt.Sprintf(" <undecodable: %v>", err)
		}
		return s + " " + DescribeConfChange(cc)
	case raftpb.EntryNoOp:
		if len(e.Data) == 0 {
			return s
		}
	}
	return s + fmt.Sprintf(" %q", e.Data)
}

// DescribeEntries renders entries separated by ", ".
func DescribeEntries(ents []raftpb.Entry) string {
	parts := make([]string, len(ents))
	for i := range ents {
		parts[i] = DescribeEntry(ents[i])
	}
	return strings.Join(parts, ", ")
}

// DescribeConfChange renders a change in the script syntax: "v4 l5 r2",
// with the transition if it is not auto, or "leave-joint".
func DescribeConfChange(cc raftpb.ConfChange) string {
	if cc.LeaveJoint() {
		return "leave-joint"
	}
	parts := make([]string, 0, len(cc.Changes)+1)
	for _, c := range cc.Changes {
		var p string
		switch c.Type {
		case raftpb.AddVoter:
			p = "v"
		case raftpb.AddNonVoter:
			p = "l"
		case raftpb.RemoveReplica:
			p = "r"
		default:
			p = c.Type.String() + ":"
		}
		parts = append(parts, fmt.Sprintf("%s%d", p, c.Replica))
	}
	switch cc.Transition {
	case raftpb.TransitionJointImplicit:
		parts = append(parts, "transition=implicit")
	case raftpb.TransitionJointExplicit:
		parts = append(parts, "transition=explicit")
	}
	return strings.Join(parts, " ")
}

// DescribeMembership renders a membership as "voters=(1 2 3)" plus the
// outgoing half, non-voters, removed IDs and auto-leave when present.
func DescribeMembership(m raftpb.Membership) string {
	ids := func(ms []raftpb.Member) string {
		parts := make([]string, len(ms))
		for i, x := range ms {
			parts[i] = fmt.Sprint(uint64(x.ID))
		}
		return "(" + strings.Join(parts, " ") + ")"
	}
	s := "voters=" + ids(m.Voters)
	if m.IsJoint() {
		s += "&&" + ids(m.VotersOutgoing)
	}
	if len(m.NonVoters) > 0 {
		s += " learners=" + ids(m.NonVoters)
	}
	if len(m.Removed) > 0 {
		parts := make([]string, len(m.Removed))
		for i, id := range m.Removed {
			parts[i] = fmt.Sprint(uint64(id))
		}
		s += " removed=(" + strings.Join(parts, " ") + ")"
	}
	if m.AutoLeave {
		s += " autoleave"
	}
	return s
}

// DescribeSnapshot renders a snapshot meta as "Index:10 Term:2 voters=(...)".
func DescribeSnapshot(m raftpb.SnapshotMeta) string {
	return fmt.Sprintf("Index:%d Term:%d %s", m.Index, m.Term, DescribeMembership(m.Membership))
}

// DescribeMessage renders one message on one line, for example
//
//	1->2 MsgReplicate Term:1 Log:1/10 Commit:10 Entries:[1/11 EntryNormal "x"]
//	2->1 MsgReplicateResp Term:1 Index:10 Rejected (Hint: 1/5)
//
// Log:T/I names the entry (term/index) a replicate or vote request refers
// to; Hint:T/I is a rejection's backtracking hint.
func DescribeMessage(m raftpb.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d->%d %s Term:%d", m.From, m.To, m.Type, m.Term)
	switch m.Type {
	case raftpb.MsgReplicate, raftpb.MsgVote, raftpb.MsgPreVote:
		fmt.Fprintf(&b, " Log:%d/%d", m.LogTerm, m.Index)
	case raftpb.MsgTransferLeader:
		fmt.Fprintf(&b, " Target:%d", m.Index)
	case raftpb.MsgHeartbeat, raftpb.MsgHeartbeatResp:
		// LogTerm carries the leader's tick (lease reads); Index, in a
		// response, the snapshot being received.
		if m.Index != 0 {
			fmt.Fprintf(&b, " Index:%d", m.Index)
		}
		if m.LogTerm != 0 {
			fmt.Fprintf(&b, " Tick:%d", m.LogTerm)
		}
	default:
		if m.Index != 0 || m.Type == raftpb.MsgReplicateResp || m.Type == raftpb.MsgReadIndexResp {
			fmt.Fprintf(&b, " Index:%d", m.Index)
		}
		if m.LogTerm != 0 && !m.Reject {
			fmt.Fprintf(&b, " LogTerm:%d", m.LogTerm)
		}
	}
	if m.Commit != 0 || m.Type == raftpb.MsgReplicate {
		fmt.Fprintf(&b, " Commit:%d", m.Commit)
	}
	if m.Reject {
		b.WriteString(" Rejected")
		if m.Type == raftpb.MsgReplicateResp {
			fmt.Fprintf(&b, " (Hint: %d/%d)", m.LogTerm, m.RejectHint)
		}
	}
	if len(m.Context) > 0 {
		fmt.Fprintf(&b, " Ctx:%q", m.Context)
	}
	if len(m.Entries) > 0 {
		fmt.Fprintf(&b, " Entries:[%s]", DescribeEntries(m.Entries))
	}
	if m.Snapshot != nil {
		fmt.Fprintf(&b, " Snapshot:{%s}", DescribeSnapshot(*m.Snapshot))
	}
	return b.String()
}

// DescribeReady renders a Ready section by section, omitting empty ones.
func DescribeReady(rd raft.Ready) string {
	var b strings.Builder
	if rd.SoftState != nil {
		fmt.Fprintf(&b, "State:%s Lead:%d\n", rd.SoftState.Role, rd.SoftState.Lead)
	}
	if !rd.HardState.IsEmpty() {
		fmt.Fprintf(&b, "HardState Term:%d Vote:%d Commit:%d\n", rd.HardState.Term, rd.HardState.Vote, rd.HardState.Commit)
	}
	list := func(title string, n int, item func(i int) string) {
		if n == 0 {
			return
		}
		b.WriteString(title + ":\n")
		for i := 0; i < n; i++ {
			b.WriteString(item(i) + "\n")
		}
	}
	list("Entries", len(rd.Entries), func(i int) string { return DescribeEntry(rd.Entries[i]) })
	if rd.Snapshot != nil {
		fmt.Fprintf(&b, "Snapshot %s\n", DescribeSnapshot(*rd.Snapshot))
	}
	list("CommittedEntries", len(rd.CommittedEntries), func(i int) string { return DescribeEntry(rd.CommittedEntries[i]) })
	list("Messages", len(rd.Messages), func(i int) string { return DescribeMessage(rd.Messages[i]) })
	list("MessagesAfterPersist", len(rd.MessagesAfterPersist), func(i int) string { return DescribeMessage(rd.MessagesAfterPersist[i]) })
	list("ReadStates", len(rd.ReadStates), func(i int) string {
		return fmt.Sprintf("Index:%d Ctx:%q", rd.ReadStates[i].Index, rd.ReadStates[i].RequestCtx)
	})
	if rd.Fetch != nil {
		fmt.Fprintf(&b, "Fetch from %d (term %d): %s\n", rd.Fetch.From, rd.Fetch.Term, DescribeSnapshot(rd.Fetch.Meta))
	}
	if b.Len() == 0 {
		return "<empty Ready>\n"
	}
	return b.String()
}

// DescribeStatus renders a replica's status; on a leader, one line per
// replica's progress follows.
func DescribeStatus(st raft.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d: %s Term:%d Vote:%d Lead:%d Commit:%d Applied:%d Log:[%d,%d]",
		st.ID, st.SoftState.Role, st.HardState.Term, st.HardState.Vote, st.SoftState.Lead,
		st.HardState.Commit, st.Applied, st.FirstIndex, st.LastIndex)
	if st.Installing != 0 {
		fmt.Fprintf(&b, " Installing:%d", st.Installing)
	}
	if st.LeadTransferee != raftpb.None {
		fmt.Fprintf(&b, " Transferee:%d", st.LeadTransferee)
	}
	fmt.Fprintf(&b, "\n%s\n", DescribeMembership(st.Membership))
	for _, id := range sortedIDs(st.Progress) {
		pr := st.Progress[id]
		fmt.Fprintf(&b, "%d: %s\n", id, DescribeProgress(pr))
	}
	return b.String()
}

// DescribeProgress renders a leader's view of one replica.
func DescribeProgress(pr tracker.Progress) string {
	s := pr.String()
	if pr.SnapshotWanted {
		s += " snapshot-wanted"
	}
	return s
}
