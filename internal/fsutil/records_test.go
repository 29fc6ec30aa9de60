package fsutil

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A RecordDir lists only its records, oldest first, reads back what it
// wrote, names a corrupt record, and treats a missing folder as empty.
func TestRecordDir(t *testing.T) {
	dir := t.TempDir()
	d := RecordDir{Dir: dir, What: "test record"}
	type rec struct{ ID, State string }
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for i, id := range []string{"b", "a"} {
		if err := d.Write(RecordName(t0.Add(time.Duration(i)*time.Hour), id), rec{ID: id, State: "done"}); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(filepath.Join(dir, ".x.json.tmp"), []byte("{"), 0o600) // a temporary file
	_ = os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600)
	_ = os.Mkdir(filepath.Join(dir, "sub.json"), 0o700)
	names, err := d.Names()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"20261202T100000Z-b.json", "20261202T110000Z-a.json"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("Names() = %q, want %q", names, want)
	}
	var r rec
	if err := d.Read(names[1], &r); err != nil || r.ID != "a" {
		t.Fatalf("Read = %+v, %v", r, err)
	}
	_ = os.WriteFile(filepath.Join(dir, "20261202T120000Z-c.json"), []byte("{not json"), 0o600)
	if err := d.Read("20261202T120000Z-c.json", &r); err == nil || !strings.Contains(err.Error(), "20261202T120000Z-c.json is corrupt") {
		t.Errorf("a corrupt record: %v", err)
	}
	if err := d.Remove(names[0]); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(names[0]); err != nil {
		t.Errorf("removing a record already gone: %v", err)
	}
	if n, err := (RecordDir{Dir: filepath.Join(dir, "missing")}).Names(); err != nil || n != nil {
		t.Errorf("a missing folder: %q, %v", n, err)
	}
}
