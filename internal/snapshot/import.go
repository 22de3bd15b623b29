package snapshot

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Import prepares a replica's snapshot directory so that the group restarts
// from an exported snapshot with a new membership: offline disaster
// recovery after a lost quorum (dragonboat ImportSnapshot, REQUIREMENTS
// §16). The host is stopped; the caller (skiff.ImportSnapshot) also resets
// the group's log to the returned meta.
//
// Before touching anything, Import verifies the export completely (meta,
// sizes, every CRC32C) and the membership: voters are given, non-empty,
// with distinct non-zero IDs, none of them among the removed replicas. The
// new membership keeps the export's ConfigChangeIndex — it is never
// synthesized from the snapshot index (matrixone#24966: a stale membership
// then looked newer) — and every replica of the old membership that is not
// a voter any more joins Removed, so it is never re-admitted.
//
// Then the snapshot is written into groupDir like a save (copied, synced,
// renamed) and every other snapshot there is removed. Published snapshots
// at or above the imported index are moved aside before it is published,
// so Open never prefers them to it; a crash in the middle leaves the older
// state or the imported one, and running Import again completes it.
func Import(fs vfs.FS, exportDir, groupDir string, group raftpb.GroupID, voters []raftpb.Member) (raftpb.SnapshotMeta, error) {
	src, err := VerifyExport(fs, exportDir)
	if err != nil {
		return src, fmt.Errorf("snapshot: import %s: %w", exportDir, err)
	}
	if group != 0 && src.Group != group {
		return src, fmt.Errorf("%w: the export is of group %d, not %d", ErrInvalid, src.Group, group)
	}
	m := cloneMeta(&src)
	m.Membership, err = importMembership(src.Membership, voters)
	if err != nil {
		return src, err
	}
	enc, err := EncodeMeta(&m)
	if err != nil {
		return src, err
	}

	// Nothing was changed so far. Prepare the new snapshot beside the old.
	// NB: a new groupDir must be durable in its parent, or a crash after
	// Import returned could lose the whole imported snapshot.
	if err := mkdirDurable(fs, groupDir); err != nil {
		return m, fmt.Errorf("snapshot: import: %w", err)
	}
	names, err := fs.List(groupDir)
	if err != nil {
		return m, fmt.Errorf("snapshot: import: %w", err)
	}
	var seq uint64
	for _, n := range names {
		if _, s, _, ok := parseDirName(n); ok {
			seq = max(seq, s)
		}
	}
	seq++
	tmp := fs.PathJoin(groupDir, tempName(m.Index, seq, kindGenerating))
	if err := fs.MkdirAll(tmp, 0o755); err != nil {
		return m, fmt.Errorf("snapshot: import: %w", err)
	}
	if err := importFiles(fs, exportDir, tmp, &m, enc); err != nil {
		fs.RemoveAll(tmp)
		return m, err
	}

	// Move aside what Open would prefer, publish, then remove the rest.
	var aside []string
	moveAside := func(keep func(index uint64, k dirKind) bool) error {
		moved := false
		for _, n := range names {
			index, _, k, ok := parseDirName(n)
			if !ok || keep(index, k) {
				continue
			}
			seq++
			to := tempName(index, seq, kindDeleting)
			if err := fs.Rename(fs.PathJoin(groupDir, n), fs.PathJoin(groupDir, to)); err != nil {
				return fmt.Errorf("snapshot: import: %w", err)
			}
			aside, moved = append(aside, to), true
		}
		if moved {
			return syncDir(fs, groupDir)
		}
		return nil
	}
	if err := moveAside(func(index uint64, k dirKind) bool { return k != kindPublished || index < m.Index }); err != nil {
		return m, err
	}
	if err := fs.Rename(tmp, fs.PathJoin(groupDir, publishedName(m.Index))); err != nil {
		return m, fmt.Errorf("snapshot: import: %w", err)
	}
	if err := syncDir(fs, groupDir); err != nil {
		return m, fmt.Errorf("snapshot: import: %w", err)
	}
	if err := moveAside(func(index uint64, k dirKind) bool { return k == kindPublished && index >= m.Index }); err != nil {
		return m, err
	}
	for _, d := range aside {
		if err := fs.RemoveAll(fs.PathJoin(groupDir, d)); err != nil {
			return m, fmt.Errorf("snapshot: import: %w", err)
		}
	}
	return m, nil
}

// importMembership builds the imported membership: the given voters, the
// old config-change index, and the old replicas that are left out added to
// Removed.
func importMembership(old raftpb.Membership, voters []raftpb.Member) (raftpb.Membership, error) {
	if len(voters) == 0 {
		return old, fmt.Errorf("%w: import needs at least one voter", ErrInvalid)
	}
	removed := slices.Clone(old.Removed)
	in := map[raftpb.ReplicaID]bool{}
	for _, v := range voters {
		if v.ID == raftpb.None || in[v.ID] {
			return old, fmt.Errorf("%w: voter id %d is zero or repeated", ErrInvalid, v.ID)
		}
		if slices.Contains(old.Removed, v.ID) {
			return old, fmt.Errorf("%w: replica %d was removed from the group and cannot come back", ErrInvalid, v.ID)
		}
		in[v.ID] = true
	}
	for _, ms := range [][]raftpb.Member{old.Voters, old.VotersOutgoing, old.NonVoters} {
		for _, o := range ms {
			if !in[o.ID] && !slices.Contains(removed, o.ID) {
				removed = append(removed, o.ID)
			}
		}
	}
	slices.Sort(removed)
	vs := slices.Clone(voters)
	slices.SortFunc(vs, func(a, b raftpb.Member) int { return cmp.Compare(a.ID, b.ID) })
	return raftpb.Membership{
		ConfigChangeIndex: old.ConfigChangeIndex,
		Voters:            vs,
		Removed:           removed,
	}, nil
}

// importFiles copies the export's files into dir, checking each against the
// meta again as it is copied, and writes the new meta; everything synced.
func importFiles(fs vfs.FS, exportDir, dir string, m *raftpb.SnapshotMeta, enc []byte) error {
	buf := make([]byte, writeBufferSize)
	for _, f := range m.Files {
		if err := copyVerified(fs, fs.PathJoin(exportDir, f.Name), fs.PathJoin(dir, f.Name), f, buf); err != nil {
			return fmt.Errorf("snapshot: import %s: %w", f.Name, err)
		}
	}
	if err := writeFileSync(fs, fs.PathJoin(dir, metaFile), enc); err != nil {
		return fmt.Errorf("snapshot: import meta: %w", err)
	}
	return syncDir(fs, dir)
}

// copyVerified copies src to dst, fsyncs dst, and checks the bytes copied
// against f's size and CRC32C.
func copyVerified(fs vfs.FS, src, dst string, f raftpb.SnapshotFile, buf []byte) error {
	in, err := fs.Open(src, vfs.SequentialReadsOption)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := fs.Create(dst, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	defer out.Close()
	var size uint64
	var crc uint32
	for {
		n, rerr := in.Read(buf)
		if n > 0 {
			crc = crc32c(crc, buf[:n])
			size += uint64(n)
			if _, err := out.Write(buf[:n]); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if size != f.Size || crc != f.CRC32C {
		return fmt.Errorf("%w: copied %d bytes crc %08x, meta says %d bytes crc %08x", ErrChecksum, size, crc, f.Size, f.CRC32C)
	}
	return out.Sync()
}
