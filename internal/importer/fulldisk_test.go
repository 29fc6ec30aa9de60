package importer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
)

// TestImportOnFullDisk runs the registry on a 3 MiB tmpfs and imports a
// 4 MiB layer: the import fails naming the full disk and leaves nothing
// behind; once the disk is grown, the same import completes. It needs root
// to mount the tmpfs and is skipped otherwise.
func TestImportOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	e, err := envAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	layer := make([]byte, 4<<20)
	if _, err := rand.Read(layer); err != nil {
		t.Fatal(err)
	}
	data := imgpkgTar(t, layer, nil)
	_, err = e.imp.Import(context.Background(), importer.Request{Source: "big.tar", Reader: bytes.NewReader(data), ToRepo: "enclave/big"})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("import onto a full disk = %v, want a no-space error", err)
	}
	if repos := e.leftovers(t); len(repos) != 0 {
		t.Fatalf("a failed import left %v", repos)
	}
	if out, err := exec.Command("mount", "-o", "remount,size=32m", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v %s", err, out)
	}
	if _, err := e.imp.Import(context.Background(), importer.Request{Source: "big.tar", Reader: bytes.NewReader(data), ToRepo: "enclave/big"}); err != nil {
		t.Fatalf("the same import after freeing space: %v", err)
	}
	if tags := e.tags(t, "enclave/big"); len(tags) != 2 {
		t.Fatalf("tags = %v", tags)
	}
}

// TestImportRecordOnFullDisk leaves one page free on a tmpfs, which the
// import's first record takes: the import fails at its first blob, and
// its final record does not fit. The history lists it failed all the
// same, and its check names the file that still says "running"; once
// there is room again the record is written, the check is clean, and a
// history opened afresh reads it failed, not interrupted.
func TestImportRecordOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	e, err := envAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	layer := make([]byte, 1<<20)
	if _, err := rand.Read(layer); err != nil {
		t.Fatal(err)
	}
	data := imgpkgTar(t, layer, nil)
	filler := filepath.Join(dir, "filler")
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filler, make([]byte, int64(st.Bavail)*st.Bsize-int64(os.Getpagesize())), 0o600); err != nil {
		t.Fatal(err)
	}

	rec, err := e.imp.Import(context.Background(), importer.Request{Source: "big.tar", Reader: bytes.NewReader(data), ToRepo: "enclave/big"})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("import onto a full disk = %v, want a no-space error", err)
	}
	if got := outcomeOf(t, e.hist, rec.ID); got != history.OutcomeFailed {
		t.Fatalf("the history lists the import %q, want %q", got, history.OutcomeFailed)
	}
	rep, err := e.hist.Check()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != "left-running" || rep.Problems[0].ID != rec.ID || !strings.Contains(rep.Problems[0].Detail, "could not be written") {
		t.Fatalf("the check while the disk is full = %+v, want the record that still says running", rep.Problems)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if rep, err := e.hist.Check(); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("the check once there is room = %+v, %v", rep.Problems, err)
	}
	again, err := history.Open(filepath.Join(dir, "imports"))
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomeOf(t, again, rec.ID); got != history.OutcomeFailed {
		t.Fatalf("the record on disk says %q, want %q", got, history.OutcomeFailed)
	}
}

func outcomeOf(t *testing.T, h *history.History, id string) string {
	t.Helper()
	rec, ok, err := h.Get(id)
	if err != nil || !ok {
		t.Fatalf("record %s: %v, found %v", id, err, ok)
	}
	return rec.Outcome
}
