package rsm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	sess := Session{ClientID: 7, SeriesID: 9, RespondedTo: 8}
	prefix := []byte("keep")
	for _, tc := range []struct {
		name string
		e    raftpb.Entry
		want proposal
	}{
		{"proposal", raftpb.Entry{Type: raftpb.EntryNormal, Data: EncodeProposal(nil, 42, []byte("set x"))},
			proposal{kind: kindProposal, key: 42, cmd: []byte("set x")}},
		{"empty proposal", raftpb.Entry{Type: raftpb.EntryNormal, Data: EncodeProposal(nil, 0, nil)},
			proposal{kind: kindProposal, key: 0, cmd: []byte{}}},
		{"max key", raftpb.Entry{Type: raftpb.EntryNormal, Data: EncodeProposal(nil, ^uint64(0), []byte("c"))},
			proposal{kind: kindProposal, key: ^uint64(0), cmd: []byte("c")}},
		{"session proposal", raftpb.Entry{Type: raftpb.EntryNormal, Data: EncodeSessionProposal(nil, 43, sess, []byte("inc"))},
			proposal{kind: kindSessionProposal, key: 43, session: sess, cmd: []byte("inc")}},
		{"register", raftpb.Entry{Type: raftpb.EntrySession, Data: EncodeRegister(nil, 44, 7)},
			proposal{kind: kindRegister, key: 44, session: Session{ClientID: 7}}},
		{"unregister", raftpb.Entry{Type: raftpb.EntrySession, Data: EncodeUnregister(nil, 45, 7)},
			proposal{kind: kindUnregister, key: 45, session: Session{ClientID: 7}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeEntry(tc.e)
			if err != nil {
				t.Fatal(err)
			}
			if got.kind != tc.want.kind || got.key != tc.want.key || got.session != tc.want.session || !bytes.Equal(got.cmd, tc.want.cmd) {
				t.Fatalf("decoded %+v, want %+v", got, tc.want)
			}
			if key, ok := ProposalKey(tc.e); !ok || key != tc.want.key {
				t.Fatalf("ProposalKey = %d, %v; want %d", key, ok, tc.want.key)
			}
			// Encoders append: dst's bytes are kept.
			var again []byte
			switch tc.want.kind {
			case kindProposal:
				again = EncodeProposal(prefix, tc.want.key, tc.want.cmd)
			case kindSessionProposal:
				again = EncodeSessionProposal(prefix, tc.want.key, tc.want.session, tc.want.cmd)
			case kindRegister:
				again = EncodeRegister(prefix, tc.want.key, tc.want.session.ClientID)
			case kindUnregister:
				again = EncodeUnregister(prefix, tc.want.key, tc.want.session.ClientID)
			}
			if !bytes.Equal(again, append([]byte("keep"), tc.e.Data...)) {
				t.Fatalf("encoding with a prefix: %x", again)
			}
		})
	}
}

// The command is a sub-slice of the entry's data, not a copy.
func TestDecodeAliasesCmd(t *testing.T) {
	data := EncodeProposal(nil, 1, []byte("abc"))
	p, err := decodeEntry(raftpb.Entry{Type: raftpb.EntryNormal, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if &p.cmd[0] != &data[headerSize] {
		t.Fatal("cmd was copied")
	}
}

func TestDecodeRejects(t *testing.T) {
	good := EncodeProposal(nil, 1, []byte("x"))
	badVersion := bytes.Clone(good)
	badVersion[0] = 2
	badKind := bytes.Clone(good)
	badKind[1] = 9
	for _, tc := range []struct {
		name string
		e    raftpb.Entry
	}{
		{"empty", raftpb.Entry{Type: raftpb.EntryNormal}},
		{"short header", raftpb.Entry{Type: raftpb.EntryNormal, Data: good[:headerSize-1]}},
		{"unknown version", raftpb.Entry{Type: raftpb.EntryNormal, Data: badVersion}},
		{"unknown kind", raftpb.Entry{Type: raftpb.EntryNormal, Data: badKind}},
		{"short session", raftpb.Entry{Type: raftpb.EntryNormal, Data: EncodeSessionProposal(nil, 1, Session{1, 2, 3}, nil)[:sessionSize-1]}},
		{"short register", raftpb.Entry{Type: raftpb.EntrySession, Data: EncodeRegister(nil, 1, 2)[:clientSize-1]}},
		{"long unregister", raftpb.Entry{Type: raftpb.EntrySession, Data: append(EncodeUnregister(nil, 1, 2), 0)}},
		{"register in a normal entry", raftpb.Entry{Type: raftpb.EntryNormal, Data: EncodeRegister(nil, 1, 2)}},
		{"proposal in a session entry", raftpb.Entry{Type: raftpb.EntrySession, Data: good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeEntry(tc.e); !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("err = %v, want ErrCorruptEntry", err)
			}
			if _, ok := ProposalKey(tc.e); ok {
				t.Fatal("ProposalKey found a key in corrupt data")
			}
		})
	}
}

func TestProposalKeyConfChangeAndNoOp(t *testing.T) {
	if key, ok := ProposalKey(confChange(5, 1, 77, true)); !ok || key != 77 {
		t.Fatalf("tagged conf change: %d, %v", key, ok)
	}
	if _, ok := ProposalKey(confChange(5, 1, 0, false)); ok {
		t.Fatal("untagged conf change has a key")
	}
	if _, ok := ProposalKey(noop(5, 1)); ok {
		t.Fatal("noop has a key")
	}
	if _, ok := ProposalKey(raftpb.Entry{Type: raftpb.EntryConfigChange, Data: []byte{1, 2, 3}}); ok {
		t.Fatal("corrupt conf change has a key")
	}
}

// FuzzDecodeEntry: any bytes under any entry type decode or fail with
// ErrCorruptEntry, never panic; what decodes re-encodes to the same bytes.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(uint8(raftpb.EntryNormal), EncodeProposal(nil, 1, []byte("cmd")))
	f.Add(uint8(raftpb.EntryNormal), EncodeSessionProposal(nil, 2, Session{3, 4, 5}, []byte("cmd")))
	f.Add(uint8(raftpb.EntrySession), EncodeRegister(nil, 6, 7))
	f.Add(uint8(raftpb.EntrySession), EncodeUnregister(nil, 8, 9))
	f.Add(uint8(raftpb.EntryConfigChange), confChange(1, 1, 10, true).Data)
	f.Add(uint8(raftpb.EntryNormal), []byte{})
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		e := raftpb.Entry{Index: 1, Term: 1, Type: raftpb.EntryType(typ % 5), Data: data}
		ProposalKey(e) // must not panic
		if e.Type != raftpb.EntryNormal && e.Type != raftpb.EntrySession {
			return
		}
		// Apply must not panic either; corrupt data is a typed error.
		s := newRSM(t, &memSM{}, 0)
		_, aerr := s.Apply(Batch{Entries: []raftpb.Entry{register(1, 1, 0, 3), {Index: 2, Term: 1, Type: e.Type, Data: data}}}, nil)
		p, err := decodeEntry(e)
		if err != nil {
			if !errors.Is(err, ErrCorruptEntry) || !errors.Is(aerr, ErrCorruptEntry) {
				t.Fatalf("untyped errors: decode %v, apply %v", err, aerr)
			}
			if idx, _ := s.LastApplied(); idx != 1 {
				t.Fatalf("applied %d after a corrupt entry 2, want 1", idx)
			}
			return
		}
		if aerr != nil {
			t.Fatalf("apply of decodable data: %v", aerr)
		}
		var again []byte
		switch p.kind {
		case kindProposal:
			again = EncodeProposal(nil, p.key, p.cmd)
		case kindSessionProposal:
			again = EncodeSessionProposal(nil, p.key, p.session, p.cmd)
		case kindRegister:
			again = EncodeRegister(nil, p.key, p.session.ClientID)
		case kindUnregister:
			again = EncodeUnregister(nil, p.key, p.session.ClientID)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding %x gave %x", data, again)
		}
	})
}
