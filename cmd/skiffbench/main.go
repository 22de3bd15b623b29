package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	// The catch-up workload re-executes this binary as the new replica.
	if len(os.Args) > 1 && os.Args[1] == childCommand {
		os.Exit(childMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line flags.
type options struct {
	workloads  []string
	duration   time.Duration
	repeat     int
	json       bool
	dir        string
	cpuProfile string
	list       bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("skiffbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var wl string
	fs.StringVar(&wl, "workload", "all", `workload names, comma-separated, or "all" (see --list)`)
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured time of each throughput and latency run")
	fs.IntVar(&o.repeat, "repeat", 3, "runs per workload, each on a fresh cluster; figures are medians")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per result instead of a table")
	fs.StringVar(&o.dir, "dir", "", "directory for the hosts' data on the disk to measure (default a temporary directory, removed at exit)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of each run's measured window to `PREFIX`.<workload>-<run>.pprof")
	fs.BoolVar(&o.list, "list", false, "list the workloads and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.repeat < 1 || o.duration <= 0 {
		return o, errors.New("--repeat and --duration must be positive")
	}
	for _, w := range strings.Split(wl, ",") {
		if w = strings.TrimSpace(w); w != "" {
			o.workloads = append(o.workloads, w)
		}
	}
	return o, nil
}

// run is main without the process exit, for tests: it returns the exit
// status.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "skiffbench:", err)
		return 2
	}
	all := workloads()
	if o.list {
		for _, w := range all {
			fmt.Fprintf(stdout, "%-16s %s\n", w.name, w.desc)
		}
		return 0
	}
	selected, err := selectWorkloads(all, o.workloads)
	if err != nil {
		fmt.Fprintln(stderr, "skiffbench:", err)
		return 2
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "skiffbench-")
		if err != nil {
			fmt.Fprintln(stderr, "skiffbench:", err)
			return 1
		}
		defer os.RemoveAll(d)
		o.dir = d
	} else if err := os.MkdirAll(o.dir, 0o755); err != nil {
		fmt.Fprintln(stderr, "skiffbench:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	out := newPrinter(stdout, o.json)
	out.header(machineInfo(o.dir))
	status := 0
	done := map[string]result{} // by workload/metric, for relative targets
	for _, w := range selected {
		if ctx.Err() != nil {
			status = 1
			break
		}
		runs := make([][]measurement, 0, o.repeat)
		var runErr error
		for i := 0; i < o.repeat && ctx.Err() == nil; i++ {
			dir := filepath.Join(o.dir, fmt.Sprintf("%s-%d", w.name, i+1))
			fmt.Fprintf(stderr, "skiffbench: %s run %d of %d\n", w.name, i+1, o.repeat)
			e := env{dir: dir, duration: o.duration}
			if o.cpuProfile != "" {
				e.profile = fmt.Sprintf("%s.%s-%d.pprof", o.cpuProfile, w.name, i+1)
			}
			ms, err := w.run(ctx, e)
			// A run leaves its directory behind only on failure.
			os.RemoveAll(dir)
			if err != nil {
				runErr = err
				break
			}
			runs = append(runs, ms)
		}
		if runErr != nil {
			fmt.Fprintf(stderr, "skiffbench: %s: %v\n", w.name, runErr)
			status = 1
			continue
		}
		for _, r := range medians(w, runs, done) {
			done[r.Workload+"/"+r.Metric] = r
			out.result(r)
		}
	}
	if err := out.flush(); err != nil {
		fmt.Fprintln(stderr, "skiffbench:", err)
		return 1
	}
	return status
}

func selectWorkloads(all []workload, names []string) ([]workload, error) {
	if len(names) == 1 && names[0] == "all" {
		return all, nil
	}
	var out []workload
	for _, n := range names {
		i := slices.IndexFunc(all, func(w workload) bool { return w.name == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown workload %q (see --list)", n)
		}
		out = append(out, all[i])
	}
	if len(out) == 0 {
		return nil, errors.New("no workload selected")
	}
	return out, nil
}

// env is what one run of a workload gets.
type env struct {
	dir      string        // the run's own directory, removed after it
	duration time.Duration // measured time of throughput runs
	profile  string        // where to write a CPU profile of the measured window ("": none)
}

// startProfile starts profiling the measured window, if asked; the
// returned function stops it. Setup (opening hosts, elections) stays out
// of the profile, which then shows the workload's hot path.
func (e env) startProfile() (stop func() error, err error) {
	if e.profile == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(e.profile)
	if err != nil {
		return nil, fmt.Errorf("%w: cpu profile: %w", errWorkload, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: cpu profile: %w", errWorkload, err)
	}
	// stop may be deferred as well as called: only the first call stops.
	var once sync.Once
	return func() error {
		once.Do(func() {
			pprof.StopCPUProfile()
			err = f.Close()
		})
		return err
	}, nil
}

// measurement is one figure of one run.
type measurement struct {
	metric string
	value  float64
	unit   string
}

// target is DESIGN.md §9's bound for a metric: value (≥ unless atMost),
// or, when relTo names another workload's result in the same run, that
// result's value (value is then the fallback when it did not run).
type target struct {
	value  float64
	atMost bool
	relTo  string // "workload/metric"
}

// workload is one line of DESIGN.md §9.
type workload struct {
	name    string
	desc    string
	run     func(context.Context, env) ([]measurement, error)
	targets map[string]target
}

// result is a reported figure: the median over the runs.
type result struct {
	Kind     string  `json:"kind"` // "result" (the header line is "machine")
	Workload string  `json:"workload"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	// Target is 0 when DESIGN.md §9 sets none; TargetKind is ">=" or "<=".
	Target     float64 `json:"target"`
	TargetKind string  `json:"target_kind,omitempty"`
	// Ratio is Value / Target: ≥ 1 meets a ">=" target, ≤ 1 a "<=" one.
	Ratio    float64 `json:"ratio_to_target"`
	MedianOf int     `json:"median_of"`
	LoadAvg  float64 `json:"load_avg"` // 1-minute load average when reported
	// TargetFrom says where a relative target came from.
	TargetFrom string `json:"target_from,omitempty"`
}

// medians reduces a workload's runs to one result per metric, in the
// order of the first run.
func medians(w workload, runs [][]measurement, done map[string]result) []result {
	if len(runs) == 0 {
		return nil
	}
	load := loadAvg()
	var out []result
	for _, m := range runs[0] {
		var vals []float64
		for _, r := range runs {
			for _, x := range r {
				if x.metric == m.metric {
					vals = append(vals, x.value)
				}
			}
		}
		r := result{Kind: "result", Workload: w.name, Metric: m.metric, Value: median(vals), Unit: m.unit,
			MedianOf: len(vals), LoadAvg: load[0]}
		if t, ok := w.targets[m.metric]; ok {
			r.Target = t.value
			if t.relTo != "" {
				if d, ok := done[t.relTo]; ok {
					r.Target = d.Value
					r.TargetFrom = t.relTo + " (this run)"
				} else if t.value > 0 {
					r.TargetFrom = t.relTo + " (its DESIGN target)"
				}
			}
			r.TargetKind = ">="
			if t.atMost {
				r.TargetKind = "<="
			}
			if r.Target > 0 {
				r.Ratio = r.Value / r.Target
			}
		}
		out = append(out, r)
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// printer writes results as a table or as JSON lines.
type printer struct {
	w    io.Writer
	json bool
	err  error
}

// rowFormat lays the table out in fixed columns, so that rows can be
// printed as each workload finishes.
const (
	rowFormat   = "%-16s %-16s %10s %-12s %-14s %-8s %4s %5s\n"
	rowFormatNo = "%-16s %-16s %10s %-12s %-14s %-8s %4d %5.2f\n"
)

func newPrinter(w io.Writer, asJSON bool) *printer {
	return &printer{w: w, json: asJSON}
}

func (p *printer) header(m machine) {
	if p.json {
		p.emit(m)
		return
	}
	p.printf("skiffbench  %s  %s/%s  %d cores (GOMAXPROCS %d)  %s\n", m.GoVersion, m.OS, m.Arch, m.Cores, m.GOMAXPROCS, m.CPU)
	p.printf("load average %.2f %.2f %.2f at start  data in %s  %s\n\n", m.LoadAvg[0], m.LoadAvg[1], m.LoadAvg[2], m.Dir, m.Time)
	p.printf(rowFormat, "workload", "metric", "value", "unit", "target", "ratio", "runs", "load")
}

func (p *printer) result(r result) {
	if p.json {
		p.emit(r)
		return
	}
	tgt, ratio := "—", "—"
	if r.Target > 0 {
		tgt = r.TargetKind + " " + formatValue(r.Target)
		ratio = fmt.Sprintf("%.2f", r.Ratio)
		if (r.TargetKind == ">=" && r.Ratio < 1) || (r.TargetKind == "<=" && r.Ratio > 1) {
			ratio += " ✗"
		} else {
			ratio += " ✓"
		}
		if r.TargetFrom != "" {
			tgt += " *"
		}
	}
	p.printf(rowFormatNo, r.Workload, r.Metric, formatValue(r.Value), r.Unit, tgt, ratio, r.MedianOf, r.LoadAvg)
}

func (p *printer) flush() error {
	if !p.json && p.err == nil {
		p.printf("\n✓/✗: target met or not; * relative target: at least the 1-group figure\nof the same shape in this run (DESIGN.md §9); ratio = value / target.\n")
	}
	return p.err
}

func (p *printer) emit(v any) {
	if p.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		p.err = err
		return
	}
	_, p.err = p.w.Write(append(b, '\n'))
}

func (p *printer) printf(format string, args ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, args...)
}

func formatValue(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// machine is the header of a report: what the figures were measured on.
type machine struct {
	Kind       string     `json:"kind"` // "machine"
	Time       string     `json:"time"`
	GoVersion  string     `json:"go_version"`
	OS         string     `json:"os"`
	Arch       string     `json:"arch"`
	Cores      int        `json:"cores"`
	GOMAXPROCS int        `json:"gomaxprocs"`
	CPU        string     `json:"cpu"`
	LoadAvg    [3]float64 `json:"load_avg"`
	Dir        string     `json:"dir"`
}

func machineInfo(dir string) machine {
	return machine{Kind: "machine", Time: time.Now().UTC().Format(time.RFC3339),
		GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), CPU: cpuModel(),
		LoadAvg: loadAvg(), Dir: dir}
}
