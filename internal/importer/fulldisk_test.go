package importer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/importer"
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
