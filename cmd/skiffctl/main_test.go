package main

import (
	"strings"
	"testing"
)

// TestHelp: --help on every command and subcommand prints its usage with
// an example to stdout and exits 0.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"-h"},
		{"snapshot", "--help"},
		{"log", "--help"},
		{"snapshot", "inspect", "--help"},
		{"snapshot", "export", "--help"},
		{"import", "--help"},
		{"log", "dump", "--help"},
		{"version", "--help"},
		{"snapshot", "inspect", "/some/dir", "--help"},
	} {
		code, out, errOut := runCmd(args...)
		if code != exitOK || errOut != "" || !strings.Contains(out, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		if !strings.Contains(out, "Example:") {
			t.Errorf("%q: no example in\n%s", args, out)
		}
	}
}

// TestUsageErrors: a one-line message, then the usage, on stderr; exit 2.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{nil, "skiffctl: no command given"},
		{[]string{"frobnicate"}, `skiffctl: unknown command "frobnicate"`},
		{[]string{"snapshot"}, "skiffctl snapshot: no subcommand given"},
		{[]string{"snapshot", "delete"}, `skiffctl snapshot: unknown subcommand "delete"`},
		{[]string{"snapshot", "inspect", "--bogus", "d"}, "skiffctl snapshot inspect: flag provided but not defined: -bogus"},
		{[]string{"import", "--id"}, "skiffctl import: flag needs an argument: -id"},
		{[]string{"version", "extra"}, `skiffctl version: unexpected argument(s) ["extra"]`},
	} {
		code, out, errOut := runCmd(c.args...)
		first, rest, _ := strings.Cut(errOut, "\n")
		if code != exitUsage || out != "" || first != c.msg || !strings.Contains(rest, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant first line %q", c.args, code, out, errOut, c.msg)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("version")
	// Test binaries carry build info with the module's path.
	if code != exitOK || !strings.HasPrefix(out, "skiffctl ") || !strings.Contains(out, "github.com/skiffdb/skiff") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: exit %d %q", code, out)
	}
}
