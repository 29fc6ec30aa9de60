package testkit

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// GoDeb builds a .deb in Go: an ar archive of debian-binary, control.tar.gz
// (with the given control text) and data.tar.gz. dpkg-deb accepts what it
// makes (aptrepo's TestGoDebIsValid); it is quicker than dpkg-deb, and it can make
// broken control files dpkg-deb refuses to build.
func GoDeb(t testing.TB, control string, payload string) []byte {
	t.Helper()
	return ArArchive([][2][]byte{
		{[]byte("debian-binary"), []byte("2.0\n")},
		{[]byte("control.tar.gz"), TarGz(t, map[string]string{"./control": control})},
		{[]byte("data.tar.gz"), TarGz(t, map[string]string{"./usr/": "", "./usr/share/": "", "./usr/share/doc/": "", "./usr/share/doc/payload": payload})},
	})
}

// TarGz makes a gzipped tar; names ending in / are folders.
func TarGz(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := slices.Sorted(maps.Keys(files))
	hdrs := []*tar.Header{{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}}
	for _, name := range names {
		if strings.HasSuffix(name, "/") {
			hdrs = append(hdrs, &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)})
		} else {
			hdrs = append(hdrs, &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[name])), ModTime: time.Unix(0, 0)})
		}
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(files[h.Name])); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ArArchive makes an ar archive of (name, content) members, as a .deb is.
func ArArchive(members [][2][]byte) []byte {
	var buf bytes.Buffer
	buf.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&buf, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m[0], 0, 0, 0, "100644", len(m[1]))
		buf.Write(m[1])
		if len(m[1])%2 == 1 {
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}
