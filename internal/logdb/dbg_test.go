package logdb

import (
	"fmt"
	"os"
)

var dbgOn = os.Getenv("LOGDB_DEBUG") != ""

func dbg(format string, args ...any) {
	if dbgOn {
		fmt.Printf(format+"\n", args...)
	}
}
