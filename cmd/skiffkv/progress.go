package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress draws a progress bar on a terminal and plain lines otherwise
// (a log file, CI). It is small enough that a library would add more than
// it saves.
type progress struct {
	w      io.Writer
	tty    bool
	label  string
	total  int64
	bytes  bool // count bytes (KiB/MiB, rates in MiB/s) rather than items
	start  time.Time
	drawn  time.Time
	marks  int // plain mode: quarters printed so far
	done   int64
	closed bool
}

// clearToEOL erases what a longer earlier line left on the terminal.
const clearToEOL = "\x1b[K"

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newProgress(w io.Writer, label string, total int64, bytes bool) *progress {
	return &progress{w: w, tty: isTerminal(w), label: label, total: total, bytes: bytes, start: time.Now()}
}

// setTotal changes the total (a transfer's size is known only once it
// starts).
func (p *progress) setTotal(total int64) { p.total = total }

// set records done units and redraws at most every 100ms.
func (p *progress) set(done int64) {
	p.done = done
	now := time.Now()
	if p.tty {
		if now.Sub(p.drawn) >= 100*time.Millisecond {
			p.drawn = now
			fmt.Fprintf(p.w, "\r%s%s", p.line(now), clearToEOL)
		}
		return
	}
	if p.total <= 0 {
		return
	}
	crossed := false
	for p.marks < 3 && done*4 >= int64(p.marks+1)*p.total {
		p.marks++
		crossed = true
	}
	if crossed && done < p.total { // the last line is finish's
		fmt.Fprintf(p.w, "%s\n", p.line(now))
	}
}

// finish draws the final state and ends the line.
func (p *progress) finish() {
	if p.closed {
		return
	}
	p.closed = true
	line := p.line(time.Now())
	if p.tty {
		fmt.Fprintf(p.w, "\r%s%s\n", line, clearToEOL)
		return
	}
	fmt.Fprintf(p.w, "%s\n", line)
}

func (p *progress) line(now time.Time) string {
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.done) / elapsed
	}
	const width = 30
	frac := 0.0
	if p.total > 0 {
		frac = min(float64(p.done)/float64(p.total), 1)
	}
	filled := int(frac * width)
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	eta := "--"
	if rate > 0 && p.total > p.done {
		eta = fmtDuration(time.Duration(float64(p.total-p.done) / rate * float64(time.Second)))
	} else if p.total > 0 && p.done >= p.total {
		eta = "0s"
	}
	if p.bytes {
		return fmt.Sprintf("  %-10s %s %3.0f%%  %s / %s  %s/s  ETA %s", p.label, bar, frac*100,
			fmtBytes(p.done), fmtBytes(p.total), fmtBytes(int64(rate)), eta)
	}
	return fmt.Sprintf("  %-10s %s %3.0f%%  %d / %d  %.0f/s  ETA %s", p.label, bar, frac*100, p.done, p.total, rate, eta)
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}
