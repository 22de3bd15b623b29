package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
)

const importUsage = `Usage:
  skiffctl import --exported DIR --data DIR --id ID --members ID=HOST:PORT,...
      [--group G] [--deployment-id N]

Offline disaster recovery, when a group lost its quorum for good: rebuilds
this replica's data directory from an exported snapshot (see "skiffctl
snapshot export"), with a new membership. The export is verified first
(meta, every file's size and CRC32C) and nothing is changed if it fails.
Then the snapshot becomes the group's only snapshot in --data, with the new
membership (the replicas of the old membership that are not in --members
are marked removed for good), and the group's log is reset to it.

The server must be stopped. Run the same command, with the same --exported
copy and --members, on the host of every replica in --members (each with
its own --id and --data), then start each with
  skiffkv serve --id ID --data DIR --members <the same list> ...
Writes acknowledged after the export was taken are lost.

Flags:
  --exported DIR       the exported snapshot directory (.../snapshot-<index>)
  --data DIR           this replica's data directory (skiffkv --data)
  --id ID              this replica's ID; it must be one of --members
  --members LIST       the new membership: ID=HOST:PORT pairs (Raft
                       addresses), comma-separated
  --group G            the group (default 1, the group skiffkv runs)
  --deployment-id N    skiffkv's --deployment-id (default 1, skiffkv's
                       default), written to --data's identity file when it
                       has none

For skiffkv's own entries in --data: an identity file of another replica
(or, with --deployment-id given, of another deployment) is refused before
anything changes; a missing one is written, so that "skiffkv serve"
accepts the directory; the state machine's directory (kv/), whose data
would be newer than the imported snapshot, is moved aside to
kv.before-import-<index> (delete it once the group is back), so the
replica restores from the snapshot.

Example:
  skiffctl import --exported /backup/snapshot-00000000000000004711 \
      --data /var/lib/skiffkv --id 1 \
      --members 1=10.0.0.1:7000,2=10.0.0.2:7000,3=10.0.0.3:7000
`

func runImport(args []string, stdout, stderr io.Writer) int {
	const prog = "skiffctl import"
	fl := newFlags("import")
	exported := fl.String("exported", "", "")
	data := fl.String("data", "", "")
	idFlag := fl.String("id", "", "")
	membersFlag := fl.String("members", "", "")
	group := fl.Uint64("group", 1, "")
	deployment := fl.Uint64("deployment-id", 1, "")
	if _, code, ok := parse(fl, args, 0, importUsage, stdout, stderr); !ok {
		return code
	}
	deploymentSet := false
	fl.Visit(func(f *flag.Flag) { deploymentSet = deploymentSet || f.Name == "deployment-id" })
	if *deployment == 0 {
		return usageError(stderr, prog, "--deployment-id must be non-zero", importUsage)
	}
	for _, req := range []struct{ name, val string }{{"exported", *exported}, {"data", *data}, {"id", *idFlag}, {"members", *membersFlag}} {
		if req.val == "" {
			return usageError(stderr, prog, "--"+req.name+" is required", importUsage)
		}
	}
	id, err := parseReplicaID(*idFlag)
	if err != nil {
		return usageError(stderr, prog, "--id: "+err.Error(), importUsage)
	}
	members, err := parseMembers(*membersFlag)
	if err != nil {
		return usageError(stderr, prog, "--members: "+err.Error(), importUsage)
	}
	if *group == 0 {
		return usageError(stderr, prog, "--group must be at least 1", importUsage)
	}
	if _, ok := members[id]; !ok {
		return failf(stderr, prog, "--id %d is not in --members (%s): this replica would not be part of the new group", id, formatMembers(members))
	}

	// Verify before anything is touched, and say precisely what is wrong.
	rep := inspectSnapshot(filepath.Clean(*exported))
	if !rep.OK {
		fmt.Fprintf(stderr, "%s: the export %s failed verification; nothing was changed:\n", prog, *exported)
		for _, p := range rep.Problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
		return exitFail
	}
	m := rep.meta
	if rep.Meta.MetadataOnly {
		return failf(stderr, prog, "the export %s holds no state machine data (an on-disk state machine's metadata-only snapshot): "+
			"a replica cannot be rebuilt from it; nothing was changed", *exported)
	}
	if uint64(m.Group) != *group {
		return failf(stderr, prog, "the export is of group %d, not --group %d; nothing was changed", m.Group, *group)
	}
	for _, r := range m.Membership.Removed {
		if _, ok := members[skiff.ReplicaID(r)]; ok {
			return failf(stderr, prog, "replica %d was removed from group %d before the export and cannot come back under that ID; give it a new ID; nothing was changed", r, m.Group)
		}
	}
	if err := checkNotRunning(*data); err != nil {
		return failf(stderr, prog, "%v; nothing was changed", err)
	}
	ident, err := checkIdentity(*data, uint64(id), *deployment, deploymentSet)
	if err != nil {
		return failf(stderr, prog, "%v; nothing was changed", err)
	}
	// finishSkiffkvDir moves the state machine aside after the import; a
	// leftover of an earlier import in the way is refused before.
	if err := checkAsideFree(*data, m.Index); err != nil {
		return failf(stderr, prog, "%v; nothing was changed", err)
	}
	cfg := skiff.HostConfig{Dir: *data}
	if err := skiff.ImportSnapshot(cfg, *exported, skiff.GroupID(*group), members); err != nil {
		return failf(stderr, prog, "%v", err)
	}
	done, err := finishSkiffkvDir(*data, ident, m.Index)
	if err != nil {
		return failf(stderr, prog, "the snapshot was imported, but: %v; fix it and run the same import again", err)
	}

	fmt.Fprintf(stdout, "imported snapshot index %d term %d of group %d into %s (replica %d)\n", m.Index, m.Term, m.Group, *data, id)
	fmt.Fprintf(stdout, "  snapshot: %s\n", filepath.Join(groupSnapshotDir(*data, *group), publishedName(m.Index)))
	fmt.Fprintf(stdout, "  membership: voters %s (config change index %d kept)\n", formatMembers(members), m.Membership.ConfigChangeIndex)
	var gone []string
	for _, o := range slices.Concat(m.Membership.Voters, m.Membership.VotersOutgoing, m.Membership.NonVoters) {
		if _, ok := members[o.ID]; !ok {
			gone = append(gone, strconv.FormatUint(uint64(o.ID), 10))
		}
	}
	if len(gone) > 0 {
		fmt.Fprintf(stdout, "  removed for good: %s\n", strings.Join(gone, ", "))
	}
	fmt.Fprintf(stdout, "  log of group %d reset to the snapshot\n", m.Group)
	for _, d := range done {
		fmt.Fprintf(stdout, "  %s\n", d)
	}
	fmt.Fprintln(stdout, "next:")
	step := 1
	if len(members) > 1 {
		fmt.Fprintf(stdout, "  %d. run this import, with the same export and --members, on every other replica's host:\n", step)
		for _, rid := range slices.Sorted(maps.Keys(members)) {
			if rid != id {
				fmt.Fprintf(stdout, "       skiffctl import --exported <copy of %s> --data <its data dir> --id %d --members %s\n", filepath.Base(*exported), rid, formatMembers(members))
			}
		}
		step++
	}
	fmt.Fprintf(stdout, "  %d. start every replica with the same --members:\n", step)
	fmt.Fprintf(stdout, "       skiffkv serve --id %d --data %s --raft-addr %s --http-addr HOST:PORT --deployment-id %d --members %s\n",
		id, *data, members[id], ident.DeploymentID, formatMembers(members))
	return exitOK
}

// parseReplicaID parses a non-zero replica ID.
func parseReplicaID(s string) (skiff.ReplicaID, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a replica ID (a positive integer)", s)
	}
	return skiff.ReplicaID(n), nil
}

// parseMembers parses "ID=HOST:PORT,..." (DESIGN §7's --members): IDs
// positive and distinct, addresses HOST:PORT with a numeric port, no
// address twice.
func parseMembers(s string) (map[skiff.ReplicaID]string, error) {
	members := map[skiff.ReplicaID]string{}
	addrs := map[string]skiff.ReplicaID{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		idText, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not ID=HOST:PORT", part)
		}
		id, err := parseReplicaID(idText)
		if err != nil {
			return nil, fmt.Errorf("in %q: %v", part, err)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("in %q: %q is not HOST:PORT", part, addr)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return nil, fmt.Errorf("in %q: port %q is not a number in 1..65535", part, port)
		}
		if _, dup := members[id]; dup {
			return nil, fmt.Errorf("replica %d is listed twice", id)
		}
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("replicas %d and %d have the same address %s", other, id, addr)
		}
		members[id], addrs[addr] = addr, id
	}
	return members, nil
}

func formatMembers(m map[skiff.ReplicaID]string) string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d=%s", id, m[id]))
	}
	return strings.Join(parts, ",")
}

// errRunning: the log of a data directory is open in a running host.
var errRunning = errors.New("the log is in use: a server is running on this data directory (stop it first)")

// checkNotRunning fails when a process holds the log's lock. The lock is
// internal/logdb's (its WAL's LOCK file, an fcntl lock taken through
// pebble's vfs, which also knows the locks of this process). It is taken
// and released at once; a server started in between would be caught by
// the log's own lock when ImportSnapshot opens it, after the snapshot was
// written (see the report of the change this needs in logdb).
func checkNotRunning(data string) error {
	lock := filepath.Join(logDir(data), "LOCK")
	if _, err := os.Stat(lock); err != nil {
		return nil // no log yet: nothing can be running on it
	}
	l, err := vfs.Default.Lock(lock)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errRunning, lock, err)
	}
	return l.Close()
}

// checkIdentity reads skiffkv's identity file in data, if any, and checks
// it against --id (and --deployment-id when it was given). It returns the
// identity the directory will have.
func checkIdentity(data string, id, deployment uint64, deploymentSet bool) (skiffkvIdentity, error) {
	want := skiffkvIdentity{DeploymentID: deployment, ReplicaID: id}
	path := filepath.Join(data, skiffkvIdentityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return want, nil
	}
	if err != nil {
		return want, err
	}
	var got skiffkvIdentity
	if err := json.Unmarshal(b, &got); err != nil {
		return want, fmt.Errorf("%s is corrupt (%v): is --data right?", path, err)
	}
	if got.ReplicaID != id {
		return want, fmt.Errorf("%s belongs to replica %d, not --id %d: is --data right?", data, got.ReplicaID, id)
	}
	if deploymentSet && got.DeploymentID != deployment {
		return want, fmt.Errorf("%s belongs to deployment %d, not --deployment-id %d", data, got.DeploymentID, deployment)
	}
	return got, nil
}

// asideDir is where finishSkiffkvDir moves the state machine's directory.
func asideDir(data string, index uint64) (sm, aside string) {
	sm = filepath.Join(data, skiffkvStateDir)
	return sm, fmt.Sprintf("%s.before-import-%d", sm, index)
}

// checkAsideFree refuses an import whose state machine directory could not
// be moved aside afterwards.
func checkAsideFree(data string, index uint64) error {
	sm, aside := asideDir(data, index)
	if _, err := os.Stat(sm); err != nil {
		return nil
	}
	if _, err := os.Stat(aside); err == nil {
		return fmt.Errorf("%s and %s both exist: remove one", sm, aside)
	}
	return nil
}

// finishSkiffkvDir makes data startable by skiffkv after an import: the
// state machine's directory moved aside (its applied index may be past
// the snapshot: the replica would refuse to start with its state machine
// ahead of its log), the identity file written if missing. It says what
// it did.
func finishSkiffkvDir(data string, ident skiffkvIdentity, index uint64) ([]string, error) {
	var done []string
	sm, aside := asideDir(data, index)
	if _, err := os.Stat(sm); err == nil {
		if _, err := os.Stat(aside); err == nil {
			return done, fmt.Errorf("%s and %s both exist: remove one", sm, aside)
		}
		if err := os.Rename(sm, aside); err != nil {
			return done, err
		}
		if err := syncDir(data); err != nil {
			return done, err
		}
		done = append(done, fmt.Sprintf("state machine data moved aside to %s (the replica restores from the snapshot; delete it once the group is back)", aside))
	}
	path := filepath.Join(data, skiffkvIdentityFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		b, _ := json.Marshal(ident)
		if err := writeFileDurable(path, b); err != nil {
			return done, err
		}
		done = append(done, fmt.Sprintf("wrote %s (replica %d of deployment %d)", path, ident.ReplicaID, ident.DeploymentID))
	}
	return done, nil
}

// writeFileDurable writes path through a synced temp file, renamed over
// it, and syncs the directory.
func writeFileDurable(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
