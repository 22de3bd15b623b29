package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReviewIdentityTmpLeftover: a first start that crashed while writing
// the identity file (after creating skiffkv.json.tmp, before the rename)
// leaves a directory that held nothing else. The next start of the same
// replica must accept it: nothing of another replica or deployment is in
// it, and writeFileDurable overwrites the temp file anyway.
func TestReviewIdentityTmpLeftover(t *testing.T) {
	c := serveConfig{id: 1, deploymentID: 7, data: filepath.Join(t.TempDir(), "d")}
	if err := os.MkdirAll(c.data, 0o755); err != nil {
		t.Fatal(err)
	}
	// What a crash between OpenFile(tmp) and Rename leaves: a partial or
	// empty temp file.
	if err := os.WriteFile(filepath.Join(c.data, identityFile+".tmp"), []byte(`{"deploym`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkIdentity(c); err != nil {
		t.Fatalf("restart after a crash during the first identity write: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(c.data, identityFile))
	if err != nil || string(b) != `{"deployment_id":7,"replica_id":1}` {
		t.Fatalf("identity file after the restart: %q %v", b, err)
	}
	// And the identity now protects the directory as usual.
	other := c
	other.id = 2
	if err := checkIdentity(other); err == nil {
		t.Fatal("another replica accepted after the identity was written")
	}
}
