package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// Exit codes, the same for every command.
const (
	exitOK    = 0 // done; for inspect: everything verified
	exitFail  = 1 // the command ran and failed, or found a problem
	exitUsage = 2 // the command line is wrong: nothing was done
)

// command is one leaf of the command tree.
type command struct {
	name  string // "snapshot inspect"
	short string // one line for the top-level usage
	usage string // the full text of --help (synopsis, flags, example)
	run   func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"snapshot inspect", "print and verify a snapshot, an export or a group's snapshot store", inspectUsage, runInspect},
		{"snapshot export", "ask a running skiffkv to export a snapshot", exportUsage, runExport},
		{"import", "rebuild a replica's data dir from an export (disaster recovery)", importUsage, runImport},
		{"log dump", "print the groups and entries of a stopped host's log", dumpUsage, runDump},
		{"version", "print the module version", versionUsage, runVersion},
	}
}

const topUsage = `skiffctl is skiff's operator tool: it inspects and verifies snapshots and
logs offline, asks a running skiffkv for an exported snapshot, and rebuilds a
replica from one after a lost quorum.

Usage:
  skiffctl <command> [flags]

Commands:
%s
Every command takes --help. Exit codes: 0 success, 1 failure or a
verification error, 2 a usage error.

Example:
  skiffctl snapshot inspect /var/lib/skiffkv/snapshots/00000000000000000001
`

// run is the whole program: main only adds os.Exit.
func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		return usageError(stderr, "skiffctl", "no command given", topText(cmds))
	}
	if isHelp(args[0]) || args[0] == "help" {
		fmt.Fprint(stdout, topText(cmds))
		return exitOK
	}
	// Commands are one or two words: find the longest that matches.
	for _, c := range cmds {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			return c.run(args[len(words):], stdout, stderr)
		}
	}
	// "skiffctl snapshot" alone or with an unknown subcommand.
	var group []command
	for _, c := range cmds {
		if first, _, ok := strings.Cut(c.name, " "); ok && first == args[0] {
			group = append(group, c)
		}
	}
	if len(group) > 0 {
		text := groupText(args[0], group)
		if len(args) > 1 && isHelp(args[1]) {
			fmt.Fprint(stdout, text)
			return exitOK
		}
		if len(args) == 1 {
			return usageError(stderr, "skiffctl "+args[0], "no subcommand given", text)
		}
		return usageError(stderr, "skiffctl "+args[0], fmt.Sprintf("unknown subcommand %q", args[1]), text)
	}
	return usageError(stderr, "skiffctl", fmt.Sprintf("unknown command %q", args[0]), topText(cmds))
}

func topText(cmds []command) string {
	var b strings.Builder
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-18s %s\n", c.name, c.short)
	}
	return fmt.Sprintf(topUsage, b.String())
}

func groupText(name string, cmds []command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage:\n  skiffctl %s <subcommand> [flags]\n\nSubcommands:\n", name)
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-18s %s\n", c.name, c.short)
	}
	fmt.Fprintf(&b, "\nEvery subcommand takes --help.\n\nExample:\n  skiffctl %s --help\n", cmds[0].name)
	return b.String()
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// usageError prints the one-line message and the usage to stderr and
// returns exitUsage.
func usageError(stderr io.Writer, prog, msg, usage string) int {
	fmt.Fprintf(stderr, "%s: %s\n\n%s", prog, msg, usage)
	return exitUsage
}

// failf reports a failure of a command that ran: one line on stderr.
func failf(stderr io.Writer, prog, format string, a ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", prog, fmt.Sprintf(format, a...))
	return exitFail
}

// newFlags returns a flag set that reports nothing itself: parse decides
// what goes where.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args with flags allowed before and after the positional
// arguments ("inspect DIR --json" as well as "inspect --json DIR"), and
// checks their count. It returns the positional arguments and, when the
// caller must stop, the exit code (exitOK after --help).
func parse(fs *flag.FlagSet, args []string, npos int, usage string, stdout, stderr io.Writer) ([]string, int, bool) {
	prog := "skiffctl " + fs.Name()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, usage)
				return nil, exitOK, false
			}
			return nil, usageError(stderr, prog, err.Error(), usage), false
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != npos {
		msg := fmt.Sprintf("want %d argument(s), got %d: %q", npos, len(pos), pos)
		if npos == 0 {
			msg = fmt.Sprintf("unexpected argument(s) %q", pos)
		}
		return nil, usageError(stderr, prog, msg, usage), false
	}
	return pos, 0, true
}

const versionUsage = `Usage:
  skiffctl version

Prints the skiff module version this binary was built from (from the Go
build information), and the Go version.

Example:
  skiffctl version
`

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version")
	if _, code, ok := parse(fs, args, 0, versionUsage, stdout, stderr); !ok {
		return code
	}
	fmt.Fprintln(stdout, versionString())
	return exitOK
}

// versionString: "skiffctl <module version> (<module path>, <go version>)".
// A binary built inside the module's checkout reports "(devel)" and, when
// the build recorded it, the VCS revision.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "skiffctl: no build information"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " " + rev + dirty
	}
	path := bi.Main.Path
	if path == "" {
		path = "github.com/skiffdb/skiff"
	}
	return fmt.Sprintf("skiffctl %s (%s, %s)", v, path, bi.GoVersion)
}
