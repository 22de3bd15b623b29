// Package raftpb holds skiff's wire and disk types and their binary codec.
//
// Layer 0 of the pipeline: every other stage speaks these types. The raft
// core produces Entries, HardStates and Messages; logdb persists Entries and
// HardStates; the transport ships MessageBatches; the snapshot subsystem
// records SnapshotMeta and Membership next to the snapshot files.
//
// # Codec
//
// Every encoded top-level value starts with a one-byte codec version
// (CodecVersion). Integers are unsigned varints (encoding/binary), byte
// strings are a varint length followed by the bytes, and repeated fields are
// a varint count followed by the elements. Field order is fixed by the
// encoder; there are no tags, so adding a field means a new CodecVersion and
// a decoder that still reads the old one.
//
//	Entry        = term index type data
//	HardState    = term vote commit
//	Member       = id addr
//	Membership   = configChangeIndex voters votersOutgoing nonVoters removed autoLeave
//	SnapshotFile = name size crc32c
//	SnapshotMeta = formatVersion group index term membership smType smVersion
//	               onDisk compression files
//	Message      = type group from to term logTerm index commit reject
//	               rejectHint hintTerm context entries hasSnapshot [snapshot]
//	MessageBatch = version deploymentID sourceAddress messages
//
// Decoding is allocation-bounded by the input: every length and count is
// checked against the bytes that remain before anything is allocated, so a
// hostile frame of n bytes cannot make the decoder allocate much more than
// n bytes. Decoders return ErrCorrupt (wrapped with what was being read) and
// never panic.
//
// Imports: nothing from this module.
package raftpb
