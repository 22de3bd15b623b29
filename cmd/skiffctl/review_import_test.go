package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// TestReviewImportAsideCollisionChangesNothing: finishSkiffkvDir's refusal
// "kv and kv.before-import-N both exist" comes after skiff.ImportSnapshot
// has already reset the group's log and replaced its snapshots, so the
// directory is left half-imported (log reset, kv/ still newer than it: the
// server refuses to start) although the refusal could have been decided
// before anything was touched, like every other refusal of import.
func TestReviewImportAsideCollisionChangesNothing(t *testing.T) {
	f := getFixture(t)
	data := filepath.Join(t.TempDir(), "d")
	copyTree(t, f.data, data)
	sm := filepath.Join(data, skiffkvStateDir)
	aside := fmt.Sprintf("%s.before-import-%d", sm, f.exportIdx)
	for _, d := range []string{sm, aside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "CURRENT"), []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := treeDigest(t, data)
	code, out, errOut := runCmd("import", "--exported", f.exportDir, "--data", data, "--id", "1",
		"--members", "1=127.0.0.1:7001,2=127.0.0.1:7002")
	if code == exitOK {
		t.Fatalf("import with both %s and %s present succeeded:\n%s", sm, aside, out)
	}
	if after := treeDigest(t, data); !maps.Equal(before, after) {
		var changed []string
		for p, d := range after {
			if before[p] != d {
				changed = append(changed, p)
			}
		}
		for p := range before {
			if _, ok := after[p]; !ok {
				changed = append(changed, p+" (removed)")
			}
		}
		t.Fatalf("a refused import (exit %d: %s) changed the data directory: %v", code, errOut, changed)
	}
}
