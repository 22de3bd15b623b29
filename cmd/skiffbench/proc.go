package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// loadAvg returns the 1-, 5- and 15-minute load averages (zeros where
// /proc/loadavg is missing: the figures are then unqualified, not wrong).
func loadAvg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// memStatus is a process's resident set from /proc/<pid>/status, in
// bytes: RSS now and its high-water mark (VmHWM).
type memStatus struct{ rss, hwm int64 }

// readMemStatus reads pid's memory status ("self" for this process).
func readMemStatus(pid string) (memStatus, error) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return memStatus{}, fmt.Errorf("%w: memory status: %w", errWorkload, err)
	}
	defer f.Close()
	var m memStatus
	var found int
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		// The kernel writes "  123456 kB".
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return memStatus{}, fmt.Errorf("%w: memory status %s %q: %w", errWorkload, k, v, err)
		}
		if k == "VmRSS" {
			m.rss = kb << 10
		} else {
			m.hwm = kb << 10
		}
		found++
	}
	if err := s.Err(); err != nil {
		return memStatus{}, fmt.Errorf("%w: memory status: %w", errWorkload, err)
	}
	if found != 2 {
		return memStatus{}, fmt.Errorf("%w: no VmRSS/VmHWM in /proc/%s/status", errWorkload, pid)
	}
	return m, nil
}

// cpuTime returns the CPU time (user + system) this process has used.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("%w: getrusage: %w", errWorkload, err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
