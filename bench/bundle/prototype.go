package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

// The what-if of the report: how fast could `bundle create` go on this
// machine if it (1) hashed every byte once, on download, instead of three
// times (go-containerregistry's verifying reader, the cache's own sha256,
// and the archive writer's check), (2) wrote the archive while the
// downloads run, each blob as soon as it and those before it are in the
// cache, instead of after all of them, and (3) copied each blob from the
// cache into the archive with copy_file_range (io.Copy from an *os.File to
// an *os.File does that), instead of through user space. It keeps what the
// product keeps: -parallel downloads into a cache, each blob written to a
// temporary file, fsynced and renamed once verified; the archive written
// to a temporary file, fsynced and renamed. It leaves out resolving the
// images (the blob list is known; resolving took ~0.2 s) and the inventory,
// its signature and index.json (a few KiB). It is not the product.
//
// Two variants each undo one of (2) and (3), to tell their shares apart:
// prototype-serial writes the archive only after every download is done;
// prototype-rehash copies each blob through user space (32 KiB at a time,
// as io.Copy does in bundle.WriteArchive) and hashes it again on the way.
const (
	phPrototype       = "prototype"
	phPrototypeSerial = "prototype-serial"
	phPrototypeRehash = "prototype-rehash"
)

func (b *bench) prototypePhase(ctx context.Context, ds *dataset, variant string) (*result, error) {
	r := newResult(variant, ds)
	dir, err := b.runDir(variant)
	if err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	cacheDir := filepath.Join(dir, "cache")
	if err := os.MkdirAll(filepath.Join(cacheDir, "tmp"), 0o750); err != nil {
		return r, err
	}
	// Largest first, as the bundler downloads; the archive takes the blobs
	// in the same order, so the writer follows the downloads closely.
	blobs := slices.Clone(ds.blobs)
	sort.SliceStable(blobs, func(i, j int) bool { return blobs[i].size > blobs[j].size })
	done := make([]chan error, len(blobs))
	for i := range done {
		done[i] = make(chan error, 1)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: b.o.parallel, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Minute}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	syncDisk()
	benchkit.WaitQuiet(ctx, b.o.quietWait)
	m := b.meterSelf()
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range b.o.parallel {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for i := range jobs {
				done[i] <- b.fetchToCache(ctx, hc, blobs[i], cacheDir, buf)
			}
		})
	}
	go func() {
		defer close(jobs)
		for i := range blobs {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	out := filepath.Join(dir, "bundle.tar")
	err = writePrototypeArchive(ctx, out, cacheDir, blobs, done, variant)
	cancel()
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	m.stop(r)
	if err != nil {
		return r, err
	}
	finish(r)
	if !b.verified[variant+ds.label] { // once per set: read it back
		if err := checkArchive(out, blobs); err != nil {
			return r, fmt.Errorf("prototype archive: %w", err)
		}
		b.verified[variant+ds.label] = true
		r.Note = "verified: every blob read back and hashed; "
	}
	r.Note += "client = this program; not the product (see prototype.go)"
	return r, nil
}

// fetchToCache downloads one blob into the cache: one sha256, 1 MiB
// writes, fsync, rename.
func (b *bench) fetchToCache(ctx context.Context, hc *http.Client, bl blobRef, cacheDir string, buf []byte) error {
	kind := "blobs"
	if bl.manifest {
		kind = "manifests"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.up.host+"/v2/"+bl.repo+"/"+kind+"/"+bl.digest, nil)
	if err != nil {
		return err
	}
	if bl.manifest {
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", bl.digest, resp.Status)
	}
	f, err := os.CreateTemp(filepath.Join(cacheDir, "tmp"), "blob-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(resp.Body, bl.size+1), buf)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != bl.size || got != bl.digest {
		return fmt.Errorf("%s: %d bytes hashing to %s", bl.digest, n, got)
	}
	return os.Rename(f.Name(), filepath.Join(cacheDir, strings.TrimPrefix(bl.digest, "sha256:")))
}

// writePrototypeArchive writes the blobs as blobs/sha256/<hex> entries of a
// PAX tar, each as soon as its download is done (prototype-serial: once all
// are), copying the cache file in the kernel (prototype-rehash: through
// user space, hashed again).
func writePrototypeArchive(ctx context.Context, out, cacheDir string, blobs []blobRef, done []chan error, variant string) error {
	f, err := os.CreateTemp(filepath.Dir(out), ".bundle-*.tmp")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	defer f.Close()
	wait := func(i int) error {
		select {
		case err := <-done[i]:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if variant == phPrototypeSerial {
		for i := range blobs {
			if err := wait(i); err != nil {
				return err
			}
		}
	}
	var hdr bytes.Buffer
	var pad [512]byte
	buf := make([]byte, 32<<10)
	for i, bl := range blobs {
		if variant != phPrototypeSerial {
			if err := wait(i); err != nil {
				return err
			}
		}
		hdr.Reset()
		tw := tar.NewWriter(&hdr)
		if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + strings.TrimPrefix(bl.digest, "sha256:"), Mode: 0o644, Size: bl.size,
			ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := f.Write(hdr.Bytes()); err != nil { // the header blocks only: tw is not closed
			return err
		}
		src, err := os.Open(filepath.Join(cacheDir, strings.TrimPrefix(bl.digest, "sha256:")))
		if err != nil {
			return err
		}
		var n int64
		if variant == phPrototypeRehash {
			h := sha256.New()
			n, err = io.CopyBuffer(struct{ io.Writer }{f}, io.TeeReader(io.LimitReader(src, bl.size), h), buf)
			if err == nil && "sha256:"+hex.EncodeToString(h.Sum(nil)) != bl.digest {
				err = fmt.Errorf("%s: the cache file changed", bl.digest)
			}
		} else {
			n, err = io.Copy(f, io.LimitReader(src, bl.size)) // copy_file_range
		}
		_ = src.Close()
		if err != nil {
			return err
		}
		if n != bl.size {
			return fmt.Errorf("%s: copied %d bytes of %d", bl.digest, n, bl.size)
		}
		if rem := bl.size % 512; rem != 0 {
			if _, err := f.Write(pad[:512-rem]); err != nil {
				return err
			}
		}
	}
	if _, err := f.Write(append(pad[:], pad[:]...)); err != nil { // end of archive
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}

// checkArchive reads a prototype archive back and checks every blob.
func checkArchive(path string, blobs []blobRef) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var seen []string
	for range len(blobs) + 1 {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		sum := sha256.New()
		if _, err := io.Copy(sum, tr); err != nil {
			return err
		}
		if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); "blobs/sha256/"+strings.TrimPrefix(got, "sha256:") != h.Name {
			return fmt.Errorf("%s hashes to %s", h.Name, got)
		}
		seen = append(seen, strings.TrimPrefix(h.Name, "blobs/sha256/"))
	}
	if len(seen) != len(blobs) {
		return fmt.Errorf("%d entries, want %d", len(seen), len(blobs))
	}
	for _, bl := range blobs {
		if !slices.Contains(seen, strings.TrimPrefix(bl.digest, "sha256:")) {
			return fmt.Errorf("%s missing", bl.digest)
		}
	}
	return nil
}
