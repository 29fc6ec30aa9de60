package main

// Analysis phases (-analysis): where an import's time goes. Each reads the
// same imgpkg tar as the imports and does part of their work, so that the
// report can compare the import with the sum (serial) or the maximum
// (overlapped) of its parts:
//
//   - cpu:      the tar read, the sha256 of the whole stream and the sha256
//               of every blob, as the importer and the registry do them,
//               writing nothing (the CPU floor of today's design);
//   - fsync:    every blob written to its own file with 1 MiB writes and
//               fsynced before the next one starts, no hashing at all (the
//               floor of one fsync per blob, done serially);
//   - pipeline: a prototype of an overlapped import over the real
//               internal/registry: each blob is handed, in 1 MiB buffers
//               (8 MiB in all), to registry.WriteBlob running in its own
//               goroutine, so that the stream's sha256 and the blob's run
//               on two cores and the commit (fsync) of one blob overlaps
//               reading and hashing the next; at most two blobs in flight.

import (
	"archive/tar"
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/registry"
)

const (
	analysisCPU      = "analysis: read + sha256 ×2, no write"
	analysisFsync    = "analysis: write + fsync each blob, serial, no hash"
	analysisPipeline = "analysis: pipelined WriteBlob prototype"
)

type hashReader struct {
	r io.Reader
	h hash.Hash
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// eachBlob reads the imgpkg tar as the importer does (a 1 MiB bufio.Reader
// over a reader that hashes the whole stream) and calls f for every blob
// entry with its expected digest.
func eachBlob(path string, hashStream bool, f func(d digest.Digest, size int64, r io.Reader) error) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	var src io.Reader = file
	if hashStream {
		src = &hashReader{r: file, h: sha256.New()}
	}
	tr := tar.NewReader(bufio.NewReaderSize(src, 1<<20))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name, ok := strings.CutPrefix(h.Name, "sha256-")
		if !ok {
			if _, err := io.Copy(io.Discard, tr); err != nil {
				return err
			}
			continue
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, strings.TrimSuffix(name, ".tar.gz"))
		if err := f(d, h.Size, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}

func analysisPhase(ctx context.Context, o options, ds *benchkit.ImageSet, work, name string) (*result, error) {
	r := &result{Name: name, Bytes: ds.TarSize}
	dir := filepath.Join(work, "analysis")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	var (
		body func() error
		reg  *registry.Registry
	)
	switch name {
	case analysisCPU:
		body = func() error {
			return eachBlob(ds.ImgpkgTar, true, func(d digest.Digest, _ int64, r io.Reader) error {
				h := sha256.New()
				if _, err := io.Copy(h, r); err != nil { // 32 KiB at a time, as io.Copy in WriteBlob
					return err
				}
				if got := digest.NewDigest(digest.SHA256, h); got != d {
					return fmt.Errorf("hashes to %s", got)
				}
				return nil
			})
		}
	case analysisFsync:
		buf := make([]byte, 1<<20)
		body = func() error {
			return eachBlob(ds.ImgpkgTar, false, func(d digest.Digest, _ int64, r io.Reader) error {
				f, err := os.Create(filepath.Join(dir, d.Encoded()))
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := io.CopyBuffer(struct{ io.Writer }{f}, r, buf); err != nil {
					return err
				}
				if err := f.Sync(); err != nil {
					return err
				}
				return f.Close()
			})
		}
	case analysisPipeline:
		var err error
		reg, err = registry.New(ctx, registry.Options{RootDir: filepath.Join(dir, "registry"), SecretFile: filepath.Join(dir, "secret"),
			StateFile: filepath.Join(dir, "state.json"), Authorizer: allowAll{}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return r, err
		}
		defer reg.Close()
		body = func() error { return pipelined(ctx, reg, ds.ImgpkgTar) }
	default:
		return r, fmt.Errorf("unknown analysis %q", name)
	}
	syncDisk()
	benchkit.WaitQuiet(ctx, o.quietWait)
	stopPerf := startPerf(o, name)
	defer stopPerf()
	self := os.Getpid()
	cpu0 := benchkit.CPUSeconds(self)
	w := benchkit.BeginIOWindow()
	start := time.Now()
	err := body()
	r.Seconds = time.Since(start).Seconds()
	stopPerf()
	r.ServerCPU = benchkit.CPUSeconds(self) - cpu0
	r.OtherCores, r.IOWaitCores = w.End(r.ServerCPU)
	if err != nil {
		return r, err
	}
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
	if reg != nil {
		for _, img := range ds.Images {
			for _, l := range img.Layers {
				if _, ok, err := reg.StatBlob(ctx, digest.Digest(l.Digest)); err != nil || !ok {
					return r, fmt.Errorf("blob %s not stored (%w)", l.Digest, err)
				}
			}
		}
		r.Note = "every layer verified present in the registry's storage afterwards"
	}
	return r, nil
}

// pipelined stores every blob of the tar with registry.WriteBlob, each in
// its own goroutine, at most two at a time, so that while one commits
// (flush, fsync, rename, link) the next is read and hashed. The blob's
// bytes go to its goroutine in 1 MiB buffers through a channel (8 buffers
// shared by all, so 8 MiB at most): an io.Pipe would hand over 32 KiB at a
// time in lock-step, and Go's scheduler would then run both ends on one
// core, one after the other.
func pipelined(ctx context.Context, reg *registry.Registry, path string) error {
	const (
		inFlight = 2
		bufSize  = 1 << 20
		buffers  = 8
	)
	free := make(chan []byte, buffers)
	for range buffers {
		free <- make([]byte, bufSize)
	}
	sem := make(chan struct{}, inFlight)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	err := eachBlob(path, true, func(d digest.Digest, size int64, r io.Reader) error {
		sem <- struct{}{}
		cr := &chanReader{ch: make(chan []byte, buffers), free: free}
		done := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer close(done)
			_, err := reg.WriteBlob(ctx, "bench/staging", registry.Descriptor{Digest: d, Size: size}, cr)
			cr.drain()
			if err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
		}()
		defer close(cr.ch)
		for {
			buf := <-free
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				select {
				case cr.ch <- buf[:n]:
				case <-done:
					free <- buf
					return errors.New("blob writer stopped early")
				}
			} else {
				free <- buf
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
	wg.Wait()
	if err == nil {
		err = firstErr
	}
	return err
}

// chanReader reads the buffers sent on ch (until it is closed) and gives
// each one back to free once read.
type chanReader struct {
	ch   chan []byte
	free chan []byte
	buf  []byte // the buffer being read
	off  int
}

func (c *chanReader) Read(p []byte) (int, error) {
	for c.buf == nil || c.off == len(c.buf) {
		if c.buf != nil {
			c.free <- c.buf[:cap(c.buf)]
			c.buf = nil
		}
		b, ok := <-c.ch
		if !ok {
			return 0, io.EOF
		}
		c.buf, c.off = b, 0
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// drain gives back every buffer still held or queued.
func (c *chanReader) drain() {
	if c.buf != nil {
		c.free <- c.buf[:cap(c.buf)]
		c.buf = nil
	}
	for {
		select {
		case b, ok := <-c.ch:
			if !ok {
				return
			}
			c.free <- b[:cap(b)]
		default:
			return
		}
	}
}
