package main

import (
	"os"
	"testing"
)

// reviewBug skips a test that demonstrates a known bug, so the suite stays
// green until it is fixed. SKIFF_REVIEW_BUGS=1 runs it (and shows it
// failing); once the bug is fixed, delete the reviewBug call.
func reviewBug(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("SKIFF_REVIEW_BUGS") == "" {
		t.Skip("BUG: " + msg)
	}
}
