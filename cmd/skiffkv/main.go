package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `skiffkv — a replicated key-value store on skiff (Raft), backed by Pebble.

Usage:
  skiffkv demo  [--dir DIR] [--keep] [--keys N] [--value-size BYTES]
  skiffkv serve --id ID --data DIR --raft-addr HOST:PORT --http-addr HOST:PORT
                [--members ID=HOST:PORT,...] [--join] [flags]
  skiffkv version

Run "skiffkv demo --help" or "skiffkv serve --help" for the flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// run is the whole command; ctx ends on SIGINT/SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "serve":
		return runServe(ctx, args[1:], stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return exitOK
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "skiffkv: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "skiffkv (unknown version)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return "skiffkv " + v + " " + bi.GoVersion
}
