package filestore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/appliance-dev/appliance/internal/filestore"
)

// file is content with its digest.
type file struct {
	data   []byte
	digest string
	hex    string
}

func newFile(s string) file {
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:])
	return file{data: []byte(s), digest: "sha256:" + h, hex: h}
}

func openStore(t *testing.T, dir string) *filestore.Store {
	t.Helper()
	s, err := filestore.Open(t.Context(), dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func write(t *testing.T, st *filestore.Stage, f file) {
	t.Helper()
	if err := st.Write(t.Context(), f.digest, int64(len(f.data)), bytes.NewReader(f.data)); err != nil {
		t.Fatalf("Write(%s): %v", f.digest, err)
	}
}

// commit stages the files of entries (by digest) under id and commits them.
func commit(t *testing.T, s *filestore.Store, id string, files map[string]file) []filestore.Entry {
	t.Helper()
	st, err := s.Stage(id)
	if err != nil {
		t.Fatal(err)
	}
	var entries []filestore.Entry
	for _, name := range slices.Sorted(maps.Keys(files)) {
		f := files[name]
		write(t, st, f)
		entries = append(entries, filestore.Entry{Name: name, Digest: f.digest, Kind: "file"})
	}
	out, err := s.Commit(t.Context(), st, entries)
	if err != nil {
		t.Fatalf("Commit(%s): %v", id, err)
	}
	return out
}

// serve mounts the handler as the server does and returns the base URL of
// /files.
func serve(t *testing.T, s *filestore.Store) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files", s.Handler()))
	srv := httptest.NewServer(mux) // 127.0.0.1:0
	t.Cleanup(srv.Close)
	return srv.URL + "/files"
}

func fileURL(base, name string) string {
	return base + (&url.URL{Path: "/" + name}).EscapedPath()
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, u string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

// dirFiles lists the regular files under dir, relative and sorted.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func blobNames(t *testing.T, dir string) []string {
	t.Helper()
	return dirFiles(t, filepath.Join(dir, "blobs", "sha256"))
}

// TestCommitAllAtOnce stages three files, shows none is visible before the
// commit and all are after it, never some, and serves them with their
// hashes, checked by sha256sum -c when it is installed.
func TestCommitAllAtOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	base := serve(t, s)
	files := map[string]file{
		"nim/llama-3.1-8b/profile-a.tar": newFile(strings.Repeat("profile a ", 50000)),
		"drivers/nvidia-570.run":         newFile("driver bytes"),
		"iso/ubuntu 24.04.iso":           newFile("an iso with a space in its name"),
	}

	st, err := s.Stage("imp-1")
	if err != nil {
		t.Fatal(err)
	}
	var entries []filestore.Entry
	for _, name := range slices.Sorted(maps.Keys(files)) {
		f := files[name]
		write(t, st, f)
		if !st.Has(f.digest) {
			t.Fatalf("Has(%s) = false after Write", f.digest)
		}
		p, ok := st.Path(f.digest)
		if got, err := os.ReadFile(p); !ok || err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("Path(%s) = %q, %v: content %v", f.digest, p, ok, err)
		}
		entries = append(entries, filestore.Entry{Name: name, Digest: f.digest, Kind: "nim-profile", Version: "1", Metadata: map[string]string{"gpu": "h100"}})
	}
	for name := range files {
		if _, ok := s.Get(name); ok {
			t.Fatalf("%s visible before the commit", name)
		}
		if r := do(t, http.MethodGet, fileURL(base, name), nil); r.status != http.StatusNotFound {
			t.Fatalf("GET %s before commit = %d", name, r.status)
		}
	}

	// Watch the index and the list while the commit runs: 0 or 3 entries,
	// never a part.
	stop := make(chan struct{})
	var seen sync.Map
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			seen.Store(len(s.List()), true)
			data, err := os.ReadFile(filepath.Join(dir, "index.json"))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			var idx map[string]filestore.Entry
			if err != nil || json.Unmarshal(data, &idx) != nil {
				seen.Store(fmt.Sprintf("unreadable index: %v", err), true)
				continue
			}
			seen.Store(len(idx), true)
		}
	})
	out, err := s.Commit(t.Context(), st, entries)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	seen.Range(func(k, _ any) bool {
		if k != 0 && k != 3 {
			t.Errorf("a reader saw %v", k)
		}
		return true
	})

	if len(out) != 3 {
		t.Fatalf("Commit returned %d entries", len(out))
	}
	for _, e := range out {
		f := files[e.Name]
		if e.Size != int64(len(f.data)) || e.Added.IsZero() || e.ImportID != "imp-1" || e.Previous != "" {
			t.Errorf("stored entry %+v", e)
		}
		if got, _ := s.Get(e.Name); got.Digest != f.digest || got.Metadata["gpu"] != "h100" {
			t.Errorf("Get(%s) = %+v", e.Name, got)
		}
		if !s.HasDigest(f.digest) {
			t.Errorf("HasDigest(%s) = false", f.digest)
		}
	}
	if names := entryNames(s.List()); !slices.Equal(names, slices.Sorted(maps.Keys(files))) {
		t.Fatalf("List = %v", names)
	}
	if got := dirFiles(t, filepath.Join(dir, ".staging")); len(got) != 0 {
		t.Fatalf("staging holds %v after commit", got)
	}
	if _, err := os.Stat(filepath.Join(dir, ".staging", "imp-1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stage folder still there: %v", err)
	}

	// Content and hashes over HTTP.
	dl := t.TempDir()
	for name, f := range files {
		r := do(t, http.MethodGet, fileURL(base, name), nil)
		if r.status != http.StatusOK || !bytes.Equal(r.body, f.data) {
			t.Fatalf("GET %s = %d, %d bytes", name, r.status, len(r.body))
		}
		sum := sha256.Sum256(f.data)
		for k, want := range map[string]string{
			"ETag":              `"` + f.digest + `"`,
			"Digest":            "sha-256=" + base64.StdEncoding.EncodeToString(sum[:]),
			"X-Checksum-Sha256": f.hex,
			"Content-Type":      "application/octet-stream",
			"Content-Length":    fmt.Sprint(len(f.data)),
			"Accept-Ranges":     "bytes",
		} {
			if got := r.header.Get(k); got != want {
				t.Errorf("GET %s: %s = %q, want %q", name, k, got, want)
			}
		}
		if r.header.Get("Last-Modified") != "" {
			t.Errorf("GET %s sends Last-Modified", name)
		}
		sumr := do(t, http.MethodGet, fileURL(base, name+".sha256"), nil)
		if want := f.hex + "  " + filepath.Base(name) + "\n"; sumr.status != http.StatusOK || string(sumr.body) != want {
			t.Fatalf("GET %s.sha256 = %d %q, want %q", name, sumr.status, sumr.body, want)
		}
		p := filepath.Join(dl, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, r.body, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p+".sha256", sumr.body, 0o644); err != nil {
			t.Fatal(err)
		}
		checkSums(t, filepath.Dir(p), filepath.Base(p)+".sha256")
	}
	sums := do(t, http.MethodGet, base+"/SHA256SUMS", nil)
	if sums.status != http.StatusOK || strings.Count(string(sums.body), "\n") != 3 {
		t.Fatalf("GET SHA256SUMS = %d %q", sums.status, sums.body)
	}
	if err := os.WriteFile(filepath.Join(dl, "SHA256SUMS"), sums.body, 0o644); err != nil {
		t.Fatal(err)
	}
	checkSums(t, dl, "SHA256SUMS")

	// The listing, with and without ?format=json, and at /files without
	// the slash when mounted without the mux.
	for _, u := range []string{base + "/", base + "/?format=json"} {
		r := do(t, http.MethodGet, u, nil)
		var list struct {
			Files []filestore.Entry `json:"files"`
		}
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" || json.Unmarshal(r.body, &list) != nil {
			t.Fatalf("GET %s = %d %s %q", u, r.status, r.header.Get("Content-Type"), r.body)
		}
		if names := entryNames(list.Files); !slices.Equal(names, slices.Sorted(maps.Keys(files))) || list.Files[0].Size == 0 {
			t.Fatalf("GET %s lists %+v", u, list.Files)
		}
	}
}

// checkSums runs sha256sum -c on a sums file in dir, or checks it in Go
// when sha256sum is not installed.
func checkSums(t *testing.T, dir, sums string) {
	t.Helper()
	if bin, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.CommandContext(t.Context(), bin, "--strict", "-c", sums)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sha256sum -c %s: %v\n%s", sums, err, out)
		}
		return
	}
	data, err := os.ReadFile(filepath.Join(dir, sums))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		want, name, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "  ")
		if !ok {
			t.Fatalf("%s: bad line %q", sums, line)
		}
		content, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(content); hex.EncodeToString(sum[:]) != want {
			t.Fatalf("%s: %s does not match", sums, name)
		}
	}
}

func entryNames(es []filestore.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

// TestWriteRefuses shows content that does not match its digest or size is
// refused with an error naming the digest, and nothing of it is kept.
func TestWriteRefuses(t *testing.T) {
	t.Parallel()
	good := newFile("the real content")
	for _, tc := range []struct {
		name    string
		digest  string
		size    int64
		data    string
		wantErr error
	}{
		{"digest mismatch", good.digest, int64(len(good.data)), "the fake content", filestore.ErrDigestMismatch},
		{"short", good.digest, int64(len(good.data)) + 1, string(good.data), filestore.ErrSizeMismatch},
		{"long", good.digest, int64(len(good.data)) - 1, string(good.data), filestore.ErrSizeMismatch},
		{"empty but announced", good.digest, 10, "", filestore.ErrSizeMismatch},
		{"negative size", good.digest, -1, string(good.data), filestore.ErrSizeMismatch},
		{"not sha256", "md5:" + good.hex[:32], int64(len(good.data)), string(good.data), filestore.ErrInvalidDigest},
		{"upper-case hex", "sha256:" + strings.ToUpper(good.hex), int64(len(good.data)), string(good.data), filestore.ErrInvalidDigest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir)
			st, err := s.Stage("imp")
			if err != nil {
				t.Fatal(err)
			}
			err = st.Write(t.Context(), tc.digest, tc.size, strings.NewReader(tc.data))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Write = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.digest) {
				t.Fatalf("error %q does not name %s", err, tc.digest)
			}
			var fe *filestore.Error
			if !errors.As(err, &fe) || fe.Digest != tc.digest || fe.Import != "imp" {
				t.Fatalf("error %#v", err)
			}
			if st.Has(tc.digest) {
				t.Fatal("Has = true after a refused write")
			}
			if got := dirFiles(t, filepath.Join(dir, ".staging")); len(got) != 0 {
				t.Fatalf("staging keeps %v", got)
			}
			if _, err := s.Commit(t.Context(), st, []filestore.Entry{{Name: "x", Digest: good.digest}}); !errors.Is(err, filestore.ErrMissingBlob) {
				t.Fatalf("Commit of the refused content = %v", err)
			}
			// The stage is still usable: the right content goes in.
			write(t, st, good)
			if _, err := s.Commit(t.Context(), st, []filestore.Entry{{Name: "x", Digest: good.digest}}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestWriteCancelled shows a cancelled context stops a write and keeps
// nothing.
func TestWriteCancelled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	st, err := s.Stage("imp")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	f := newFile(strings.Repeat("x", 4<<20))
	r := &cancelAfter{r: bytes.NewReader(f.data), n: 1 << 20, cancel: cancel}
	if err := st.Write(ctx, f.digest, int64(len(f.data)), r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write = %v, want context.Canceled", err)
	}
	if got := dirFiles(t, filepath.Join(dir, ".staging")); len(got) != 0 {
		t.Fatalf("staging keeps %v", got)
	}
}

// cancelAfter cancels its context once n bytes were read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n -= n
	if c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// failReader fails the test when read: content the store already has must
// not be read again.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("content read although already staged or stored")
	return 0, io.ErrUnexpectedEOF
}

// TestWriteIdempotent shows a digest already staged or stored is not
// written again, and that stored content linked into a stage survives
// another commit replacing its last name.
func TestWriteIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	base := serve(t, s)
	a, b := newFile("version a"), newFile("version b")
	commit(t, s, "imp-1", map[string]file{"tool.bin": a})

	st, err := s.Stage("imp-2")
	if err != nil {
		t.Fatal(err)
	}
	write(t, st, b)
	if err := st.Write(t.Context(), b.digest, int64(len(b.data)), failReader{t}); err != nil {
		t.Fatalf("second Write of a staged digest: %v", err)
	}
	if err := st.Write(t.Context(), b.digest, int64(len(b.data))+1, failReader{t}); !errors.Is(err, filestore.ErrSizeMismatch) {
		t.Fatalf("Write of a staged digest with another size = %v", err)
	}
	if err := st.Write(t.Context(), a.digest, int64(len(a.data)), failReader{t}); err != nil {
		t.Fatalf("Write of a stored digest: %v", err)
	}
	p, ok := st.Path(a.digest)
	if got, err := os.ReadFile(p); !ok || err != nil || !bytes.Equal(got, a.data) {
		t.Fatalf("Path(stored) = %q %v: %v", p, ok, err)
	}

	// Meanwhile another import replaces tool.bin: a's blob is collected,
	// yet imp-2 still has it.
	commit(t, s, "imp-3", map[string]file{"tool.bin": b})
	if s.HasDigest(a.digest) {
		t.Fatal("a still in the store after its last name was replaced")
	}
	if !st.Has(a.digest) {
		t.Fatal("imp-2 lost a")
	}
	if _, err := s.Commit(t.Context(), st, []filestore.Entry{{Name: "old/tool.bin", Digest: a.digest}}); err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodGet, base+"/old/tool.bin", nil); r.status != http.StatusOK || !bytes.Equal(r.body, a.data) {
		t.Fatalf("GET old/tool.bin = %d %q", r.status, r.body)
	}
	if got, want := blobNames(t, dir), slices.Sorted(slices.Values([]string{a.hex, b.hex})); !slices.Equal(got, want) {
		t.Fatalf("blobs = %v, want %v", got, want)
	}
}

// TestCommitMissingDigest shows a commit naming content that is neither
// staged nor stored is refused, names the digest, and changes nothing.
func TestCommitMissingDigest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	kept := newFile("kept")
	commit(t, s, "imp-1", map[string]file{"kept.bin": kept})
	before, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	blobsBefore := blobNames(t, dir)

	st, err := s.Stage("imp-2")
	if err != nil {
		t.Fatal(err)
	}
	staged, missing := newFile("staged"), newFile("missing")
	write(t, st, staged)
	_, err = s.Commit(t.Context(), st, []filestore.Entry{
		{Name: "staged.bin", Digest: staged.digest},
		{Name: "kept-again.bin", Digest: kept.digest}, // stored: fine
		{Name: "missing.bin", Digest: missing.digest},
	})
	if !errors.Is(err, filestore.ErrMissingBlob) || !strings.Contains(err.Error(), missing.digest) {
		t.Fatalf("Commit = %v, want ErrMissingBlob naming %s", err, missing.digest)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if !bytes.Equal(before, after) {
		t.Fatal("index.json changed")
	}
	if got := blobNames(t, dir); !slices.Equal(got, blobsBefore) {
		t.Fatalf("blobs = %v, want %v", got, blobsBefore)
	}
	if names := entryNames(s.List()); !slices.Equal(names, []string{"kept.bin"}) {
		t.Fatalf("List = %v", names)
	}
	if !st.Has(staged.digest) {
		t.Fatal("the refused commit emptied the stage")
	}
	if err := st.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := st.Discard(); err != nil {
		t.Fatalf("second Discard: %v", err)
	}
	if got := dirFiles(t, filepath.Join(dir, ".staging")); len(got) != 0 {
		t.Fatalf("staging keeps %v after Discard", got)
	}
	if err := st.Write(t.Context(), missing.digest, int64(len(missing.data)), bytes.NewReader(missing.data)); !errors.Is(err, filestore.ErrStageClosed) {
		t.Fatalf("Write after Discard = %v", err)
	}
	if _, err := s.Commit(t.Context(), st, nil); !errors.Is(err, filestore.ErrStageClosed) {
		t.Fatalf("Commit after Discard = %v", err)
	}
}

// TestCommitRefusesNames shows names that could escape a download folder,
// or that no URL can carry, are refused and change nothing.
func TestCommitRefusesNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	f := newFile("content")
	for _, name := range []string{
		"", "../x", "a/../../x", "..", ".", "/abs", "a//b", "a/", "a/./b", "a/..",
		"x\x00y", "x\ny", "tab\there", `back\slash`, "bad\xffutf8",
		strings.Repeat("s", 256), "ok/" + strings.Repeat("s", 256),
	} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			st, err := s.Stage("imp")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Discard()
			write(t, st, f)
			_, err = s.Commit(t.Context(), st, []filestore.Entry{{Name: name, Digest: f.digest}})
			if !errors.Is(err, filestore.ErrInvalidName) {
				t.Fatalf("Commit(%q) = %v, want ErrInvalidName", name, err)
			}
		})
	}
	if len(s.List()) != 0 || len(blobNames(t, dir)) != 0 {
		t.Fatalf("refused names left %v, blobs %v", s.List(), blobNames(t, dir))
	}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("index.json written: %v", err)
	}

	// What is allowed, and the other refusals.
	st, err := s.Stage("imp")
	if err != nil {
		t.Fatal(err)
	}
	write(t, st, f)
	for _, tc := range []struct {
		entries []filestore.Entry
		wantErr error
	}{
		{[]filestore.Entry{{Name: "a", Digest: f.digest}, {Name: "a", Digest: f.digest}}, filestore.ErrDuplicateName},
		{[]filestore.Entry{{Name: "a", Digest: "sha256:abc"}}, filestore.ErrInvalidDigest},
		{[]filestore.Entry{{Name: "a", Digest: f.digest, Size: 3}}, filestore.ErrSizeMismatch},
	} {
		if _, err := s.Commit(t.Context(), st, tc.entries); !errors.Is(err, tc.wantErr) {
			t.Fatalf("Commit(%+v) = %v, want %v", tc.entries, err, tc.wantErr)
		}
	}
	ok := []string{"a", "nim/profile/ü ß.tar", "..a/b..", ".hidden", strings.Repeat("s", 255) + "/" + strings.Repeat("t", 255), "x.sha256", "SHA256SUMS"}
	var entries []filestore.Entry
	for _, n := range ok {
		entries = append(entries, filestore.Entry{Name: n, Digest: f.digest, Size: int64(len(f.data))})
	}
	out, err := s.Commit(t.Context(), st, entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range out {
		if e.Kind != "file" || e.ImportID != "imp" {
			t.Fatalf("defaults not filled: %+v", e)
		}
	}
	// A real file named like a generated one is served instead of it.
	base := serve(t, s)
	for _, n := range []string{"x.sha256", "SHA256SUMS", "nim/profile/ü ß.tar"} {
		if r := do(t, http.MethodGet, fileURL(base, n), nil); r.status != http.StatusOK || !bytes.Equal(r.body, f.data) {
			t.Fatalf("GET %s = %d %q", n, r.status, r.body)
		}
	}

	// Stage ids.
	for _, id := range []string{"", "UPPER", "a/b", "..", "a_b", strings.Repeat("a", 129)} {
		if _, err := s.Stage(id); !errors.Is(err, filestore.ErrInvalidID) {
			t.Fatalf("Stage(%q) = %v, want ErrInvalidID", id, err)
		}
	}
	one, err := s.Stage("same")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage("same"); !errors.Is(err, filestore.ErrStageExists) {
		t.Fatalf("second Stage(same) = %v, want ErrStageExists", err)
	}
	if err := one.Discard(); err != nil {
		t.Fatal(err)
	}
	two, err := s.Stage("same")
	if err != nil {
		t.Fatalf("Stage(same) after Discard: %v", err)
	}
	_ = two.Discard()
}

// TestReplace shows replacing a name records the digest it held, and the
// old blob goes when no name holds it any more, not before.
func TestReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	base := serve(t, s)
	v1, v2, v3 := newFile("v1"), newFile("v2"), newFile("v3")
	first := commit(t, s, "imp-1", map[string]file{"driver.run": v1, "pinned/driver-v1.run": v1})

	out := commit(t, s, "imp-2", map[string]file{"driver.run": v2})
	if out[0].Previous != v1.digest || !out[0].Added.After(first[0].Added) && !out[0].Added.Equal(first[0].Added) {
		t.Fatalf("replaced entry %+v", out[0])
	}
	if got, want := blobNames(t, dir), slices.Sorted(slices.Values([]string{v1.hex, v2.hex})); !slices.Equal(got, want) {
		t.Fatalf("blobs = %v, want %v (v1 still held by pinned/)", got, want)
	}

	// Re-committing the same content keeps Added and Previous.
	again := commit(t, s, "imp-3", map[string]file{"driver.run": v2})
	if again[0].Previous != v1.digest || !again[0].Added.Equal(out[0].Added) || again[0].ImportID != "imp-3" {
		t.Fatalf("same content again: %+v, was %+v", again[0], out[0])
	}

	// Replace both names: v1 and v2 lose their last names.
	commit(t, s, "imp-4", map[string]file{"driver.run": v3, "pinned/driver-v1.run": v3})
	if got := blobNames(t, dir); !slices.Equal(got, []string{v3.hex}) {
		t.Fatalf("blobs = %v, want only v3", got)
	}
	if e, _ := s.Get("driver.run"); e.Previous != v2.digest {
		t.Fatalf("Previous = %s, want %s", e.Previous, v2.digest)
	}
	if s.HasDigest(v1.digest) || s.HasDigest(v2.digest) || !s.HasDigest(v3.digest) {
		t.Fatal("HasDigest disagrees with the index")
	}
	if r := do(t, http.MethodGet, base+"/driver.run", nil); !bytes.Equal(r.body, v3.data) {
		t.Fatalf("GET driver.run = %q", r.body)
	}
}

// TestReopenAfterCrash leaves behind what a crash can (a staging folder
// with a half-written blob, a temporary index file, a blob moved in by a
// commit that never switched its index) and shows Open keeps the index it
// had and cleans the rest.
func TestReopenAfterCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	a := newFile("committed before the crash")
	commit(t, s, "imp-1", map[string]file{"a.bin": a})
	listBefore, _ := json.Marshal(s.List())
	indexBefore, _ := os.ReadFile(filepath.Join(dir, "index.json"))

	// The crash: an import half staged, a commit that moved its blob in
	// and was writing its index.
	st, err := s.Stage("imp-2")
	if err != nil {
		t.Fatal(err)
	}
	orphan := newFile("moved in, never indexed")
	write(t, st, orphan)
	mustWrite(t, filepath.Join(dir, ".staging", "imp-2", ".0123.tmp-99"), "half a blob")
	mustWrite(t, filepath.Join(dir, ".staging", "imp-9", "deadbeef"), "another import")
	mustWrite(t, filepath.Join(dir, "blobs", "sha256", orphan.hex), string(orphan.data))
	mustWrite(t, filepath.Join(dir, ".index.json.tmp-12345"), `{"half": {"name": "half", "dig`)
	// s is dropped here as a crash would.

	s2 := openStore(t, dir)
	if got, _ := json.Marshal(s2.List()); !bytes.Equal(got, listBefore) {
		t.Fatalf("List after reopen = %s, want %s", got, listBefore)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "index.json")); !bytes.Equal(got, indexBefore) {
		t.Fatal("index.json changed")
	}
	if got := dirFiles(t, filepath.Join(dir, ".staging")); len(got) != 0 {
		t.Fatalf("staging keeps %v", got)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, ".staging")); len(ents) != 0 {
		t.Fatalf("staging keeps folders %v", ents)
	}
	if _, err := os.Stat(filepath.Join(dir, ".index.json.tmp-12345")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary index file kept: %v", err)
	}
	if got := blobNames(t, dir); !slices.Equal(got, []string{a.hex}) {
		t.Fatalf("blobs = %v, want only a", got)
	}
	if s2.HasDigest(orphan.digest) {
		t.Fatal("the orphan counts as stored")
	}
	base := serve(t, s2)
	if r := do(t, http.MethodGet, base+"/a.bin", nil); r.status != http.StatusOK || !bytes.Equal(r.body, a.data) {
		t.Fatalf("GET a.bin after reopen = %d %q", r.status, r.body)
	}
	// The crashed import's id can be used again.
	commit(t, s2, "imp-2", map[string]file{"b.bin": newFile("b")})
	if len(s2.List()) != 2 {
		t.Fatalf("List = %v", entryNames(s2.List()))
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOpenCorruptIndex shows a broken index stops Open with an error naming
// the file rather than starting empty.
func TestOpenCorruptIndex(t *testing.T) {
	t.Parallel()
	for name, content := range map[string]string{
		"not json":     `{"a.bin": {`,
		"bad name":     `{"../x": {"name": "../x", "digest": "sha256:` + newFile("x").hex + `"}}`,
		"name differs": `{"a": {"name": "b", "digest": "sha256:` + newFile("x").hex + `"}}`,
		"bad digest":   `{"a": {"name": "a", "digest": "sha256:zz"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			mustWrite(t, filepath.Join(dir, "index.json"), content)
			_, err := filestore.Open(t.Context(), dir, nil)
			if !errors.Is(err, filestore.ErrCorrupt) || !strings.Contains(err.Error(), filepath.Join(dir, "index.json")) {
				t.Fatalf("Open = %v, want ErrCorrupt naming index.json", err)
			}
		})
	}
}

// TestConcurrent runs several imports at once, some sharing content and
// one name, while readers download; run with -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	base := serve(t, s)
	const imports = 8
	shared := newFile(strings.Repeat("shared between every import ", 1000))

	stop := make(chan struct{})
	var readers sync.WaitGroup
	var reads atomic.Int64
	for range 3 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, name := range []string{"common/latest.bin", "shared/imp-0.bin", "imp-1/own.bin"} {
					r := do(t, http.MethodGet, fileURL(base, name), nil)
					switch r.status {
					case http.StatusNotFound:
					case http.StatusOK:
						sum := sha256.Sum256(r.body)
						if hex.EncodeToString(sum[:]) != r.header.Get("X-Checksum-Sha256") {
							t.Errorf("GET %s: body does not match its checksum header", name)
						}
						reads.Add(1)
					default:
						t.Errorf("GET %s = %d %s", name, r.status, r.body)
					}
				}
			}
		})
	}

	var wg sync.WaitGroup
	latest := make([]file, imports)
	for i := range imports {
		latest[i] = newFile(fmt.Sprintf("latest from import %d", i))
		wg.Go(func() {
			id := fmt.Sprintf("imp-%d", i)
			st, err := s.Stage(id)
			if err != nil {
				t.Error(err)
				return
			}
			defer st.Discard()
			own := newFile(fmt.Sprintf("own content of %s", id))
			// Two writers of the same blob in one stage.
			var ww sync.WaitGroup
			for _, f := range []file{own, shared, shared, latest[i]} {
				ww.Go(func() {
					if err := st.Write(t.Context(), f.digest, int64(len(f.data)), bytes.NewReader(f.data)); err != nil {
						t.Error(err)
					}
				})
			}
			ww.Wait()
			_, err = s.Commit(t.Context(), st, []filestore.Entry{
				{Name: id + "/own.bin", Digest: own.digest},
				{Name: "shared/" + id + ".bin", Digest: shared.digest},
				{Name: "common/latest.bin", Digest: latest[i].digest},
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if t.Failed() {
		return
	}

	list := s.List()
	if len(list) != 2*imports+1 {
		t.Fatalf("List has %d entries: %v", len(list), entryNames(list))
	}
	want := map[string]bool{shared.hex: true}
	for _, e := range list {
		want[strings.TrimPrefix(e.Digest, "sha256:")] = true
		if e.Name == "common/latest.bin" && e.Previous == "" {
			t.Errorf("common/latest.bin replaced %d times but Previous is empty", imports-1)
		}
	}
	if got := blobNames(t, dir); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("blobs = %v, want exactly the %d referenced", got, len(want))
	}
	if got := dirFiles(t, filepath.Join(dir, ".staging")); len(got) != 0 {
		t.Fatalf("staging keeps %v", got)
	}
	t.Logf("%d successful downloads during the imports", reads.Load())
}

// TestHTTP covers ranges, conditional requests, HEAD, 404 and 405.
func TestHTTP(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	base := serve(t, s)
	f := newFile("0123456789abcdefghij")
	commit(t, s, "imp", map[string]file{"dir/file.bin": f})
	u := base + "/dir/file.bin"

	r := do(t, http.MethodGet, u, map[string]string{"Range": "bytes=5-9"})
	if r.status != http.StatusPartialContent || string(r.body) != "56789" || r.header.Get("Content-Range") != "bytes 5-9/20" {
		t.Fatalf("Range = %d %q %s", r.status, r.body, r.header.Get("Content-Range"))
	}
	r = do(t, http.MethodGet, u, map[string]string{"Range": "bytes=-3"})
	if r.status != http.StatusPartialContent || string(r.body) != "hij" {
		t.Fatalf("suffix Range = %d %q", r.status, r.body)
	}
	r = do(t, http.MethodGet, u, map[string]string{"Range": "bytes=5-9", "If-Range": `"` + f.digest + `"`})
	if r.status != http.StatusPartialContent {
		t.Fatalf("If-Range with the ETag = %d", r.status)
	}
	r = do(t, http.MethodGet, u, map[string]string{"Range": "bytes=50-60"})
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("Range past the end = %d", r.status)
	}
	r = do(t, http.MethodGet, u, map[string]string{"If-None-Match": `"` + f.digest + `"`})
	if r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Fatalf("If-None-Match = %d", r.status)
	}
	r = do(t, http.MethodGet, u, map[string]string{"If-None-Match": `"sha256:other"`})
	if r.status != http.StatusOK {
		t.Fatalf("If-None-Match other = %d", r.status)
	}
	r = do(t, http.MethodHead, u, nil)
	if r.status != http.StatusOK || len(r.body) != 0 || r.header.Get("Content-Length") != "20" || r.header.Get("X-Checksum-Sha256") != f.hex {
		t.Fatalf("HEAD = %d %v", r.status, r.header)
	}
	r = do(t, http.MethodHead, u+".sha256", nil)
	if r.status != http.StatusOK || len(r.body) != 0 {
		t.Fatalf("HEAD .sha256 = %d", r.status)
	}

	for _, p := range []string{"/missing", "/dir", "/dir/", "/dir/file.bin/x", "/missing.sha256", "/dir/file.bin.sha256.sha256"} {
		r := do(t, http.MethodGet, base+p, nil)
		if r.status != http.StatusNotFound || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || len(r.body) == 0 || len(r.body) > 100 {
			t.Fatalf("GET %s = %d %s %q", p, r.status, r.header.Get("Content-Type"), r.body)
		}
	}
	// Unclean paths (a ServeMux would redirect them first) are not names.
	for _, p := range []string{"/dir//file.bin", "/./dir/file.bin", "/dir/../dir/file.bin", "//dir/file.bin"} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusNotFound {
			t.Fatalf("GET %s = %d", p, rec.Code)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		r := do(t, m, u, nil)
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
			t.Fatalf("%s = %d, Allow %q", m, r.status, r.header.Get("Allow"))
		}
	}

	// Mounted with StripPrefix alone: /files is the listing too.
	rec := httptest.NewRecorder()
	http.StripPrefix("/files", s.Handler()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/files", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"dir/file.bin"`) {
		t.Fatalf("GET /files = %d %q", rec.Code, rec.Body)
	}
	// An empty store lists [] rather than null.
	empty := openStore(t, t.TempDir())
	rec = httptest.NewRecorder()
	empty.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if strings.TrimSpace(rec.Body.String()) != `{"files":[]}` {
		t.Fatalf("empty listing = %q", rec.Body)
	}
}

// TestMissingBlobServes500 shows content lost from disk is an error, not
// an empty file.
func TestMissingBlobServes500(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	f := newFile("soon gone")
	commit(t, s, "imp", map[string]file{"gone.bin": f})
	if err := os.Remove(filepath.Join(dir, "blobs", "sha256", f.hex)); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/gone.bin", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("GET of a lost blob = %d", rec.Code)
	}
	// Nor can a new name be committed for it.
	st, err := s.Stage("imp-2")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Discard()
	if _, err := s.Commit(t.Context(), st, []filestore.Entry{{Name: "again.bin", Digest: f.digest}}); !errors.Is(err, filestore.ErrMissingBlob) {
		t.Fatalf("Commit of a lost blob = %v", err)
	}
}

// FuzzEntryName commits arbitrary names: each is refused as invalid, or
// stored, served at its escaped URL, and safe to write below a folder.
func FuzzEntryName(f *testing.F) {
	for _, seed := range []string{"a", "../x", "/abs", "a//b", "", "nim/p/ü.tar", "a b", "x.sha256", "SHA256SUMS", "a/.", `a\b`, "%2e%2e/x", "?#", "a\u200bb"} {
		f.Add(seed)
	}
	content := newFile("fuzz")
	f.Fuzz(func(t *testing.T, name string) {
		s := openStore(t, t.TempDir())
		st, err := s.Stage("fuzz")
		if err != nil {
			t.Fatal(err)
		}
		write(t, st, content)
		_, err = s.Commit(t.Context(), st, []filestore.Entry{{Name: name, Digest: content.digest}})
		if err != nil {
			if !errors.Is(err, filestore.ErrInvalidName) {
				t.Fatalf("Commit(%q) = %v", name, err)
			}
			return
		}
		local := filepath.Join("root", filepath.FromSlash(name))
		if !filepath.IsLocal(filepath.FromSlash(name)) || !strings.HasPrefix(local, "root"+string(filepath.Separator)) || filepath.ToSlash(filepath.Clean(filepath.FromSlash(name))) != name {
			t.Fatalf("accepted %q, which is not a clean local path", name)
		}
		req := httptest.NewRequest(http.MethodGet, "/files"+(&url.URL{Path: "/" + name}).EscapedPath(), nil)
		rec := httptest.NewRecorder()
		http.StripPrefix("/files", s.Handler()).ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), content.data) {
			t.Fatalf("GET %q = %d %q", name, rec.Code, rec.Body)
		}
	})
}

// TestReplaceWhileServing replaces one name over and over while clients
// download it: each download is one whole version, never an error, even
// when the blob it looked up is removed before it is opened.
func TestReplaceWhileServing(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	base := serve(t, s)
	commit(t, s, "imp-0", map[string]file{"hot.bin": newFile("version 0")})

	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := do(t, http.MethodGet, base+"/hot.bin", nil)
				sum := sha256.Sum256(r.body)
				if r.status != http.StatusOK || hex.EncodeToString(sum[:]) != r.header.Get("X-Checksum-Sha256") {
					t.Errorf("GET hot.bin = %d %q", r.status, r.body)
					return
				}
			}
		})
	}
	for i := 1; i <= 50; i++ {
		commit(t, s, fmt.Sprintf("imp-%d", i), map[string]file{"hot.bin": newFile(fmt.Sprintf("version %d", i))})
	}
	close(stop)
	readers.Wait()
}
