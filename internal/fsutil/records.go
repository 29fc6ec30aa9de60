package fsutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// RecordDir is a folder of JSON records, one file each, named
// <start time>-<id>.json (RecordName), so that the names sort by start.
// The import history and the promotion records are kept this way. It
// does no locking: its users serialize their writes.
type RecordDir struct {
	Dir  string
	What string // what a record is, for errors: "import record", "promotion"
}

// RecordName is the file name of the record of id, started at started.
func RecordName(started time.Time, id string) string {
	return started.Format("20060102T150405Z") + "-" + id + ".json"
}

// Names lists the records' file names, sorted (oldest first); temporary
// files (dot-names) and anything but regular .json files are left out.
// A missing folder has no records.
func (d RecordDir) Names() ([]string, error) {
	ents, err := os.ReadDir(d.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", d.What, err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// Read decodes the record in file name into v; a record that does not
// decode is named corrupt.
func (d RecordDir) Read(name string, v any) error {
	data, err := os.ReadFile(filepath.Join(d.Dir, name))
	if err != nil {
		return fmt.Errorf("read %s: %w", d.What, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read %s: %s is corrupt: %w", d.What, name, err)
	}
	return nil
}

// Write stores v as file name, atomically (WriteFileAtomic), 0640.
func (d RecordDir) Write(name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		err = WriteFileAtomic(filepath.Join(d.Dir, name), data, 0o640)
	}
	if err != nil {
		return fmt.Errorf("save %s: %w", d.What, err)
	}
	return nil
}

// Remove deletes the record in file name; a record already gone is no error.
func (d RecordDir) Remove(name string) error {
	if err := os.Remove(filepath.Join(d.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", d.What, err)
	}
	return nil
}
