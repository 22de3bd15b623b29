//go:build tools

package skiff

import (
	_ "github.com/cockroachdb/datadriven"
	_ "github.com/cockroachdb/pebble/v2/vfs"
	_ "github.com/cockroachdb/pebble/v2/vfs/errorfs"
	_ "github.com/klauspost/compress/zstd"
	_ "golang.org/x/time/rate"
)
