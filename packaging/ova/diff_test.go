package ova_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// explainDifference says where two builds of the OVA differ, so that a
// build that is not reproducible on some machine says why: the members
// that differ and, for a disk, the first blocks that differ with the
// partition they lie in and, in the root file system, the files that own
// them (debugfs icheck and ncheck).
func explainDifference(t *testing.T, a, b string) {
	t.Helper()
	dir := t.TempDir()
	da, db := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range [][2]string{{a, da}, {b, db}} {
		if err := os.Mkdir(p[1], 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("tar", "-xf", p[0], "-C", p[1]).CombinedOutput(); err != nil {
			t.Fatalf("untar %s: %v\n%s", p[0], err, out)
		}
	}
	entries, err := os.ReadDir(da)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fa, fb := filepath.Join(da, e.Name()), filepath.Join(db, e.Name())
		if fileSHA256(t, fa) == fileSHA256(t, fb) {
			continue
		}
		t.Logf("member %s differs", e.Name())
		if !strings.HasSuffix(e.Name(), ".vmdk") {
			if out, _ := exec.Command("diff", fa, fb).CombinedOutput(); len(out) > 0 {
				t.Logf("%s", out)
			}
			continue
		}
		ra, rb := fa+".raw", fb+".raw"
		for _, p := range [][2]string{{fa, ra}, {fb, rb}} {
			if out, err := exec.Command("qemu-img", "convert", "-O", "raw", p[0], p[1]).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v\n%s", err, out)
			}
		}
		blocks := differingBlocks(t, ra, rb, 4096, 12)
		if len(blocks) == 0 {
			t.Logf("%s: the disks' contents are equal; the VMDK containers differ", e.Name())
			continue
		}
		var root []string
		for _, off := range blocks {
			where := "the data disk"
			if strings.Contains(e.Name(), "system") {
				switch {
				case off < 2048*512:
					where = "the GPT"
				case off < rootOffset:
					where = "the ESP"
				default:
					where = fmt.Sprintf("the root file system, block %d", (off-rootOffset)/4096)
					root = append(root, fmt.Sprint((off-rootOffset)/4096))
				}
			}
			t.Logf("%s: bytes at %d differ (%s)", e.Name(), off, where)
		}
		if len(root) > 0 {
			for _, raw := range []string{ra, rb} {
				img := raw + ".root"
				if out, err := exec.Command("dd", "if="+raw, "of="+img, "bs=1M", fmt.Sprintf("skip=%d", rootOffset>>20), "conv=sparse", "status=none").CombinedOutput(); err != nil {
					t.Fatalf("dd: %v\n%s", err, out)
				}
				out, _ := exec.Command("debugfs", "-R", "icheck "+strings.Join(root, " "), img).CombinedOutput()
				t.Logf("%s: debugfs icheck:\n%s", filepath.Base(raw), out)
				var inodes []string
				for _, line := range strings.Split(string(out), "\n")[1:] {
					if f := strings.Fields(line); len(f) == 2 && f[1] != "<block" {
						inodes = append(inodes, f[1])
					}
				}
				if len(inodes) > 0 {
					out, _ := exec.Command("debugfs", "-R", "ncheck "+strings.Join(inodes, " "), img).CombinedOutput()
					t.Logf("%s: debugfs ncheck:\n%s", filepath.Base(raw), out)
				}
			}
		}
	}
}

// differingBlocks returns the offsets of the first max blocks of size bs
// that differ between two files.
func differingBlocks(t *testing.T, a, b string, bs, limit int) []int64 {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	var out []int64
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); len(out) < limit; off += int64(len(ba)) {
		na, ea := io.ReadFull(fa, ba)
		nb, _ := io.ReadFull(fb, bb)
		n := min(na, nb)
		for i := 0; i < n && len(out) < limit; i += bs {
			if !bytes.Equal(ba[i:min(i+bs, n)], bb[i:min(i+bs, n)]) {
				out = append(out, off+int64(i))
			}
		}
		if na != nb {
			out = append(out, off+int64(n))
		}
		if ea != nil {
			break
		}
	}
	return out
}
