package skiff_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// This file enforces the layering of DESIGN.md §1: imports go down the
// layers only. The table below is that section as data. A package that is
// not in it, or an import edge between module packages that the table does
// not allow, fails TestImportLayers; so does production code that imports
// "testing" or a test harness. When DESIGN.md §1 changes, change the table
// in the same commit and say why.

const module = "github.com/skiffdb/skiff"

// rule is one row of the layer table. Package paths are relative to the
// module; "." is the root package skiff.
type rule struct {
	layer string
	// imports are the module packages the package's non-test files may import.
	imports []string
	// testImports are the extra module packages its _test.go files may
	// import (besides imports and the package itself).
	testImports []string
	// harness packages exist for tests: they may import "testing", and
	// only test files and other harnesses may import them.
	harness bool
}

var (
	raftCore   = []string{"internal/raft", "internal/raft/quorum", "internal/raft/tracker", "internal/raft/confchange"}
	userFacing = []string{".", "statemachine", "transport"}
)

func join(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

var layerTable = map[string]rule{
	// layer 0: nothing from the module.
	"raftpb":       {layer: "0"},
	"statemachine": {layer: "0"},

	// layer 1: the stages. The raft sub-packages form etcd's leaves-first
	// DAG: quorum ← tracker ← confchange ← raft.
	"internal/raft/quorum":     {layer: "1", imports: []string{"raftpb"}},
	"internal/raft/tracker":    {layer: "1", imports: []string{"raftpb", "internal/raft/quorum"}},
	"internal/raft/confchange": {layer: "1", imports: []string{"raftpb", "internal/raft/quorum", "internal/raft/tracker"}},
	"internal/raft": {layer: "1",
		imports:     []string{"raftpb", "internal/raft/quorum", "internal/raft/tracker", "internal/raft/confchange"},
		testImports: []string{"internal/raft/rafttest"}},
	"internal/raft/rafttest": {layer: "1 (harness)", harness: true, imports: join([]string{"raftpb"}, raftCore)},
	"internal/logdb/wal":     {layer: "1", imports: []string{"raftpb"}},
	"internal/logdb":         {layer: "1", imports: []string{"raftpb", "internal/logdb/wal"}},
	"internal/snapshot":      {layer: "1", imports: []string{"raftpb"}},
	"transport":              {layer: "1", imports: []string{"raftpb"}, testImports: []string{"transport/memnet"}},
	"transport/memnet":       {layer: "1 (harness)", harness: true, imports: []string{"raftpb", "transport"}},
	"internal/rsm":           {layer: "1", imports: []string{"raftpb", "statemachine"}},

	// layer 2: the engine moves work between the layer-1 stages. It talks
	// to logdb, not to logdb's segment format.
	"internal/engine": {layer: "2",
		imports: join([]string{"raftpb", "statemachine", "internal/logdb", "internal/snapshot",
			"transport", "internal/rsm"}, raftCore),
		testImports: []string{"transport/memnet"}},

	// layer 3: the public façade.
	".": {layer: "3", imports: []string{"internal/engine", "raftpb", "statemachine", "transport"},
		testImports: []string{"internal/testcluster", "transport/memnet"}},

	// layer 4: users of the public API; never internal/, except the
	// operator tool, which reads snapshots and logs offline (and the raftpb
	// types they are made of).
	"examples/kv":    {layer: "4", imports: userFacing, testImports: []string{"internal/testcluster", "transport/memnet"}},
	"cmd/skiffkv":    {layer: "4", imports: join(userFacing, []string{"examples/kv"})},
	"cmd/skiffbench": {layer: "4", imports: join(userFacing, []string{"examples/kv"})},
	// skiffctl's disaster-recovery tests rebuild replicas of the real KV
	// state machine.
	"cmd/skiffctl": {layer: "4", imports: join(userFacing, []string{"internal/snapshot", "internal/logdb", "raftpb"}),
		testImports: []string{"examples/kv"}},

	// tests: N hosts on memnet. transport is there because memnet's
	// endpoints are handed to HostConfig.Transport as transport.Transport.
	"internal/testcluster": {layer: "tests (harness)", harness: true,
		imports: []string{".", "statemachine", "transport", "transport/memnet"}},
}

// pkg is the part of `go list -json` output the check reads.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func rel(importPath string) (string, bool) {
	if importPath == module {
		return ".", true
	}
	if r, ok := strings.CutPrefix(importPath, module+"/"); ok {
		return r, true
	}
	return "", false
}

func isTestingPkg(path string) bool { return path == "testing" || strings.HasPrefix(path, "testing/") }

// checkLayers returns one message per violation of table by pkgs.
func checkLayers(table map[string]rule, pkgs []pkg) []string {
	var errs []string
	for _, p := range pkgs {
		from, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		r, known := table[from]
		if !known {
			errs = append(errs, fmt.Sprintf("package %s is not in the layer table: add it to layerTable in imports_test.go "+
				"with the layer DESIGN.md §1 gives it (and update DESIGN.md if it is a new stage)", from))
			continue
		}
		check := func(imp string, allowed []string, kind string) {
			if isTestingPkg(imp) && kind == "non-test" && !r.harness {
				errs = append(errs, fmt.Sprintf("%s (non-test code) imports %q: only the harness packages "+
					"(rafttest, memnet, testcluster) may", from, imp))
				return
			}
			to, ok := rel(imp)
			if !ok {
				return
			}
			if tr, ok := table[to]; ok && tr.harness && kind == "non-test" && !r.harness {
				errs = append(errs, fmt.Sprintf("%s (non-test code) imports the test harness %s", from, to))
				return
			}
			if !slices.Contains(allowed, to) {
				errs = append(errs, fmt.Sprintf("%s (layer %s, %s files) imports %s: not in the layer table "+
					"(allowed: %s); imports go down the layers of DESIGN.md §1", from, r.layer, kind, to, strings.Join(allowed, ", ")))
			}
		}
		for _, imp := range p.Imports {
			check(imp, r.imports, "non-test")
		}
		testAllowed := join(r.imports, r.testImports, []string{from})
		for _, imp := range p.TestImports {
			check(imp, testAllowed, "test")
		}
		for _, imp := range p.XTestImports {
			check(imp, testAllowed, "test")
		}
	}
	return errs
}

// checkTable reports rows that name unknown packages or form a cycle, so a
// typo in the table cannot silently allow or forbid an edge.
func checkTable(table map[string]rule) []string {
	var errs []string
	for from, r := range table {
		for _, to := range join(r.imports, r.testImports) {
			if _, ok := table[to]; !ok {
				errs = append(errs, fmt.Sprintf("layer table: %s may import %s, which is not in the table", from, to))
			}
		}
	}
	// Depth-first search over non-test edges; test edges may point up
	// (external test packages), so they are left out.
	const (
		unvisited = iota
		active
		done
	)
	state := map[string]int{}
	var visit func(string, []string)
	visit = func(p string, path []string) {
		switch state[p] {
		case active:
			errs = append(errs, fmt.Sprintf("layer table has a cycle: %s", strings.Join(append(path, p), " → ")))
			return
		case done:
			return
		}
		state[p] = active
		for _, to := range table[p].imports {
			visit(to, append(path, p))
		}
		state[p] = done
	}
	for p := range table {
		visit(p, nil)
	}
	return errs
}

func goList(t *testing.T, tags string) []pkg {
	t.Helper()
	args := []string{"list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Error"}
	if tags != "" {
		args = append(args, "-tags="+tags)
	}
	args = append(args, "./...")
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestImportLayers(t *testing.T) {
	if errs := checkTable(layerTable); len(errs) > 0 {
		t.Fatalf("the layer table is inconsistent:\n%s", strings.Join(errs, "\n"))
	}
	// The invariants tag switches on expensive checks (STYLE.md); the
	// files behind it must obey the same layers.
	for _, tags := range []string{"", "invariants"} {
		pkgs := goList(t, tags)
		if len(pkgs) == 0 {
			t.Fatalf("go list (tags %q) found no packages", tags)
		}
		for _, e := range checkLayers(layerTable, pkgs) {
			t.Errorf("tags %q: %s", tags, e)
		}
	}
}

// TestImportLayersCatches feeds the checker packages that break each rule,
// so that TestImportLayers passing means something.
func TestImportLayersCatches(t *testing.T) {
	m := func(p string) string {
		if p == "." {
			return module
		}
		return module + "/" + p
	}
	cases := []struct {
		name string
		pkg  pkg
		want string // substring of the single expected violation; "" = none
	}{
		{"allowed edge", pkg{ImportPath: m("internal/logdb"), Imports: []string{m("raftpb"), m("internal/logdb/wal"), "os"}}, ""},
		{"upward edge", pkg{ImportPath: m("raftpb"), Imports: []string{m("internal/raft")}}, "raftpb (layer 0, non-test files) imports internal/raft"},
		{"sideways edge", pkg{ImportPath: m("internal/logdb"), Imports: []string{m("internal/snapshot")}}, "imports internal/snapshot"},
		{"internal from layer 4", pkg{ImportPath: m("examples/kv"), Imports: []string{m("internal/engine")}}, "examples/kv (layer 4"},
		{"unknown package", pkg{ImportPath: m("internal/util")}, "internal/util is not in the layer table"},
		{"testing in production", pkg{ImportPath: m("internal/snapshot"), Imports: []string{"testing"}}, `imports "testing"`},
		{"synctest in production", pkg{ImportPath: m("internal/engine"), Imports: []string{"testing/synctest"}}, `imports "testing/synctest"`},
		{"harness in production", pkg{ImportPath: m("."), Imports: []string{m("internal/testcluster")}}, "imports the test harness internal/testcluster"},
		{"testing in a harness", pkg{ImportPath: m("transport/memnet"), Imports: []string{"testing", m("transport")}}, ""},
		{"harness in tests", pkg{ImportPath: m("internal/raft"), XTestImports: []string{"testing", m("internal/raft"), m("internal/raft/rafttest")}}, ""},
		{"test edge not in table", pkg{ImportPath: m("internal/logdb"), TestImports: []string{m("internal/testcluster")}}, "internal/logdb (layer 1, test files) imports internal/testcluster"},
		{"other modules ignored", pkg{ImportPath: m("internal/snapshot"), Imports: []string{"github.com/cockroachdb/pebble/v2/vfs"}}, ""},
	}
	for _, tc := range cases {
		errs := checkLayers(layerTable, []pkg{tc.pkg})
		switch {
		case tc.want == "" && len(errs) != 0:
			t.Errorf("%s: unexpected violations %q", tc.name, errs)
		case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0], tc.want)):
			t.Errorf("%s: got %q, want one violation containing %q", tc.name, errs, tc.want)
		}
	}

	bad := map[string]rule{
		"a": {imports: []string{"b"}},
		"b": {imports: []string{"a", "nope"}},
	}
	errs := strings.Join(checkTable(bad), "\n")
	if !strings.Contains(errs, "cycle") || !strings.Contains(errs, "nope, which is not in the table") {
		t.Errorf("checkTable missed a cycle or an unknown package: %q", errs)
	}
}
