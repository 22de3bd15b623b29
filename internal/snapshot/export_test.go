package snapshot

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestExportPublished(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, fs, "/g1")
	save(t, s, 10, "ten")
	save(t, s, 20, "twenty")
	before := tree(t, fs, "/g1")
	if _, err := s.Export(0, "/nope"); !errors.Is(err, ErrDirNotExist) {
		t.Fatalf("missing path: %v", err)
	}
	fs.MkdirAll("/backup", 0o755)
	dir, err := s.Export(0, "/backup")
	if err != nil {
		t.Fatal(err)
	}
	m, err := VerifyExport(fs, dir)
	if err != nil || m.Index != 20 || m.Membership.ConfigChangeIndex != 3 {
		t.Fatalf("VerifyExport: %+v, %v", m, err)
	}
	if after := tree(t, fs, "/g1"); after != before {
		t.Fatalf("export changed the store:\n%s\n---\n%s", before, after)
	}
	if _, err := s.Export(20, "/backup"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("exporting twice to the same path: %v", err)
	}
	// Self-contained: the group can go away entirely.
	fs.RemoveAll("/g1")
	if _, err := VerifyExport(fs, dir); err != nil {
		t.Fatalf("after removing the group: %v", err)
	}
}

// Validate before use: a truncated, altered or incomplete export fails.
func TestVerifyExportDamage(t *testing.T) {
	for name, damage := range map[string]func(fs vfs.FS, dir string){
		"truncated file": func(fs vfs.FS, dir string) { writeFileSync(fs, dir+"/data", []byte("twent")) },
		"flipped byte":   func(fs vfs.FS, dir string) { writeFileSync(fs, dir+"/data", []byte("twentX")) },
		"missing file":   func(fs vfs.FS, dir string) { fs.Remove(dir + "/data") },
		"truncated meta": func(fs vfs.FS, dir string) { writeFileSync(fs, dir+"/meta", []byte("skfsnap")) },
		"missing meta":   func(fs vfs.FS, dir string) { fs.Remove(dir + "/meta") },
	} {
		fs := vfs.NewMem()
		s := mustOpen(t, fs, "/g1")
		save(t, s, 20, "twenty")
		fs.MkdirAll("/backup", 0o755)
		dir, err := s.Export(0, "/backup")
		if err != nil {
			t.Fatal(err)
		}
		damage(fs, dir)
		if _, err := VerifyExport(fs, dir); !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrCorruptMeta) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
