package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chaosNet is a small network of Linux network namespaces for the chaos
// test: one namespace per replica, each with a veth whose other end is
// enslaved to one bridge in the root namespace. The bridge carries the
// address the test's clients use, so they reach every replica through
// real, separate network stacks, and faults injected inside one namespace
// (iptables rules, a shaping qdisc, a link taken down) affect only that
// replica's traffic.
//
// Every name carries the test process's pid (namespaces
// "skiff-chaos-<pid>-<id>", links "skc<pid>…"), so that the leftovers of
// a crashed run can be told apart from a run still going: removeLeftovers
// deletes only those whose pid is no longer alive (or is ours, reused).
//
// NB: the kernel this was written on has no sch_netem
// (CONFIG_NET_SCH_NETEM unset), so delay, jitter, loss, duplication and
// reordering are built from what it does have: iptables' statistic match
// with DROP (loss), TEE (duplication: a clone is routed to the packet's own
// destination), and CLASSIFY into slow HTB classes (queueing delay, jitter,
// and reordering when only some packets take the slow class).
type chaosNet struct {
	pid    int
	octet  int      // the third octet of 10.77.<octet>.0/24
	bridge string   // in the root namespace
	ns     []string // ns[i] is replica i+1's namespace
	veth   []string // veth[i] is the root-namespace end of ns[i]'s link

	// What this machine supports, found out by setup.
	haveIptables bool // iptables inside the namespaces: partitions, loss, duplication
	haveShaping  bool // HTB on the namespaces' links: delay, reordering
}

const (
	chaosNSPrefix   = "skiff-chaos-"
	chaosLinkPrefix = "skc"

	// HTB classes on each namespace's eth0 (see setup).
	classFast    = "1:10" // the default: effectively unlimited
	classReorder = "1:20" // a trickle: packets sent this way arrive late and out of order
	classDelay   = "1:30" // a congested link: every packet queues
)

// errChaosCmd wraps a failed ip/tc/iptables command.
var errChaosCmd = errors.New("chaos: command failed")

// runCmd runs a command and wraps its failure with its combined output.
func runCmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v: %s", errChaosCmd, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// chaosPrereqs says why the chaos test cannot run here, or "" if it can.
func chaosPrereqs() string {
	if os.Geteuid() != 0 {
		return "the chaos test needs root (network namespaces, veth, iptables)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "the chaos test needs iproute2's `ip` (apt-get install -y iproute2)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Listing works without kernel support; creating one does not.
	probe := fmt.Sprintf("%s%d-0", chaosNSPrefix, os.Getpid())
	if err := runCmd(ctx, "ip", "netns", "add", probe); err != nil {
		return fmt.Sprintf("`ip netns` is unavailable: %v", err)
	}
	if err := runCmd(ctx, "ip", "netns", "del", probe); err != nil {
		return fmt.Sprintf("`ip netns del` failed: %v", err)
	}
	return ""
}

// newChaosNet builds n namespaces on one bridge; close tears them down.
func newChaosNet(ctx context.Context, n int, logf func(string, ...any)) (*chaosNet, error) {
	pid := os.Getpid()
	removeLeftovers(ctx, logf)
	cn := &chaosNet{pid: pid, octet: pid%250 + 1, bridge: fmt.Sprintf("%s%dbr", chaosLinkPrefix, pid)}
	_, err := exec.LookPath("iptables")
	cn.haveIptables = err == nil
	if err := cn.setup(ctx, n, logf); err != nil {
		return cn, errors.Join(err, cn.close(context.Background()))
	}
	return cn, nil
}

func (cn *chaosNet) setup(ctx context.Context, n int, logf func(string, ...any)) error {
	if err := runCmd(ctx, "ip", "link", "add", cn.bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := runCmd(ctx, "ip", "addr", "add", cn.clientIP()+"/24", "dev", cn.bridge); err != nil {
		return err
	}
	if err := runCmd(ctx, "ip", "link", "set", cn.bridge, "up"); err != nil {
		return err
	}
	cn.haveShaping = true
	for i := range n {
		id := uint64(i + 1)
		ns := fmt.Sprintf("%s%d-%d", chaosNSPrefix, cn.pid, id)
		veth := fmt.Sprintf("%s%dv%d", chaosLinkPrefix, cn.pid, id)
		peer := fmt.Sprintf("%s%dp%d", chaosLinkPrefix, cn.pid, id)
		if err := runCmd(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		cn.ns = append(cn.ns, ns)
		if err := runCmd(ctx, "ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns); err != nil {
			return err
		}
		cn.veth = append(cn.veth, veth)
		for _, args := range [][]string{
			{"link", "set", veth, "master", cn.bridge},
			{"link", "set", veth, "up"},
			{"-n", ns, "link", "set", peer, "name", "eth0"},
			{"-n", ns, "addr", "add", cn.ip(id) + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if err := runCmd(ctx, "ip", args...); err != nil {
				return err
			}
		}
		// Shaping classes for the delay and reordering faults; nothing is
		// sent through the slow ones until a fault CLASSIFYs packets there.
		// The short pfifo queues bound the delay (an overflow is a loss).
		for _, args := range [][]string{
			{"qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10"},
			{"class", "add", "dev", "eth0", "parent", "1:", "classid", classFast, "htb", "rate", "10gbit"},
			{"class", "add", "dev", "eth0", "parent", "1:", "classid", classReorder, "htb", "rate", "64kbit", "ceil", "64kbit"},
			{"qdisc", "add", "dev", "eth0", "parent", classReorder, "pfifo", "limit", "40"},
			{"class", "add", "dev", "eth0", "parent", "1:", "classid", classDelay, "htb", "rate", "256kbit", "ceil", "256kbit"},
			{"qdisc", "add", "dev", "eth0", "parent", classDelay, "pfifo", "limit", "60"},
		} {
			if cn.haveShaping {
				if err := cn.exec(ctx, id, append([]string{"tc"}, args...)...); err != nil {
					logf("chaos: no HTB shaping here, so no delay or reordering faults: %v", err)
					cn.haveShaping = false
				}
			}
		}
	}
	if cn.haveIptables {
		// Probe once: iptables may be installed without kernel support.
		if err := cn.exec(ctx, 1, "iptables", "-S"); err != nil {
			logf("chaos: iptables unusable, so no iptables partitions, loss or duplication: %v", err)
			cn.haveIptables = false
		}
	}
	return nil
}

// ip is replica id's address; clientIP is the root namespace's, on the bridge.
func (cn *chaosNet) ip(id uint64) string { return fmt.Sprintf("10.77.%d.%d", cn.octet, id) }
func (cn *chaosNet) clientIP() string    { return fmt.Sprintf("10.77.%d.254", cn.octet) }

// exec runs a command inside replica id's namespace.
func (cn *chaosNet) exec(ctx context.Context, id uint64, args ...string) error {
	return runCmd(ctx, "ip", append([]string{"netns", "exec", cn.ns[id-1]}, args...)...)
}

// iptables appends one rule inside replica id's namespace.
func (cn *chaosNet) iptables(ctx context.Context, id uint64, args ...string) error {
	return cn.exec(ctx, id, append([]string{"iptables", "-w"}, args...)...)
}

// setLink brings replica id's link up or down from the root namespace's
// end: the replica keeps its address and routes but nothing gets through.
func (cn *chaosNet) setLink(ctx context.Context, id uint64, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return runCmd(ctx, "ip", "link", "set", cn.veth[id-1], state)
}

// heal removes every fault: links up, iptables rules flushed (the
// namespaces are ours, so all rules in them are the nemesis's).
func (cn *chaosNet) heal(ctx context.Context) error {
	var errs []error
	for i := range cn.ns {
		id := uint64(i + 1)
		errs = append(errs, cn.setLink(ctx, id, true))
		if cn.haveIptables {
			errs = append(errs, cn.exec(ctx, id, "iptables", "-w", "-F"), cn.exec(ctx, id, "iptables", "-w", "-t", "mangle", "-F"))
		}
	}
	return errors.Join(errs...)
}

// close deletes the veths (each takes its namespace end with it), the
// namespaces and the bridge. Links are deleted before the namespaces
// because `ip netns del` frees a namespace's devices asynchronously.
func (cn *chaosNet) close(ctx context.Context) error {
	var errs []error
	for _, v := range cn.veth {
		if _, err := os.Stat("/sys/class/net/" + v); err == nil {
			errs = append(errs, runCmd(ctx, "ip", "link", "del", v))
		}
	}
	for _, ns := range cn.ns {
		errs = append(errs, runCmd(ctx, "ip", "netns", "del", ns))
	}
	if _, err := os.Stat("/sys/class/net/" + cn.bridge); err == nil {
		errs = append(errs, runCmd(ctx, "ip", "link", "del", cn.bridge))
	}
	cn.ns, cn.veth = nil, nil
	return errors.Join(errs...)
}

// ruleHits is how many packets the iptables rules in replica id's
// namespace have matched (filter and mangle tables): the log shows that a
// fault did something, rather than that a rule was merely installed.
func (cn *chaosNet) ruleHits(ctx context.Context, id uint64) (int64, error) {
	var total int64
	for _, table := range []string{"filter", "mangle"} {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", cn.ns[id-1], "iptables", "-w", "-t", table, "-L", "-v", "-n", "-x").Output()
		if err != nil {
			return 0, fmt.Errorf("%w: iptables -L in %s: %v", errChaosCmd, cn.ns[id-1], err)
		}
		// Rule lines start with the packet count; chain headers and
		// column titles do not start with a number.
		for line := range strings.SplitSeq(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				total += n
			}
		}
	}
	return total, nil
}

// chaosName matches the namespaces and links chaosNet creates; the first
// group is the pid of the run that made them.
var chaosName = regexp.MustCompile(`^(?:` + chaosNSPrefix + `([0-9]+)-[0-9]+|` + chaosLinkPrefix + `([0-9]+)(?:br|[vp][0-9]+))$`)

// leftoverPID parses the pid out of a chaos namespace or link name, with ok
// false when the name is not one of ours.
func leftoverPID(name string) (int, bool) {
	m := chaosName.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	pid, err := strconv.Atoi(m[1] + m[2])
	return pid, err == nil && pid > 0
}

// stale reports whether a resource named after pid belongs to no live run:
// its process is gone, or the pid is ours (so it was reused).
func stale(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return errors.Is(err, os.ErrNotExist)
}

// removeLeftovers deletes the namespaces, bridges and veths of earlier
// chaos runs that died without cleaning up.
func removeLeftovers(ctx context.Context, logf func(string, ...any)) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for line := range strings.SplitSeq(string(out), "\n") {
			name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			if pid, ok := leftoverPID(name); ok && strings.HasPrefix(name, chaosNSPrefix) && stale(pid) {
				logf("chaos: removing namespace %s left by an earlier run: %v", name, runCmd(ctx, "ip", "netns", "del", name))
			}
		}
	}
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if pid, ok := leftoverPID(name); ok && strings.HasPrefix(name, chaosLinkPrefix) && stale(pid) {
			if _, err := os.Stat("/sys/class/net/" + name); err != nil {
				continue // deleted with its veth peer
			}
			logf("chaos: removing link %s left by an earlier run: %v", name, runCmd(ctx, "ip", "link", "del", name))
		}
	}
}

// TestChaosLeftoverNames: only the chaos test's own names are taken for
// leftovers, with the pid of the run that made them.
func TestChaosLeftoverNames(t *testing.T) {
	cases := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"skiff-chaos-4242-1", 4242, true},
		{"skiff-chaos-4242-12", 4242, true},
		{"skc4242br", 4242, true},
		{"skc4242v3", 4242, true},
		{"skc4242p1", 4242, true},
		{"skiff-chaos-x-1", 0, false},
		{"skiff-chaos-4242", 0, false},
		{"skc4242", 0, false},
		{"skc4242v", 0, false},
		{"skcbr", 0, false},
		{"eth0", 0, false},
		{"docker0", 0, false},
	}
	for _, c := range cases {
		pid, ok := leftoverPID(c.name)
		if ok != c.ok || (ok && pid != c.pid) {
			t.Errorf("leftoverPID(%q) = %d, %v; want %d, %v", c.name, pid, ok, c.pid, c.ok)
		}
	}
	if !stale(os.Getpid()) {
		t.Errorf("our own pid in a leftover's name means the pid was reused: want stale")
	}
	if stale(1) {
		t.Errorf("pid 1 is alive: want not stale")
	}
}
