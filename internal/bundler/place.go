package bundler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/fsutil"
)

// place writes a one-file bundle in a single pass over its bytes: the
// archive is laid out first (bundle.PlanArchive: every digest and size is
// known once the manifests are read), then every blob is written straight
// into its place, o.Parallel at a time, largest first. A blob still to be
// downloaded goes into its place and into the cache (for a later run) as
// it arrives; a blob from the cache or a local file is copied into its
// place and hashed on the way. The file is written under a temporary
// name, synced and renamed: a failed run leaves no archive.
func (b *builder) place(ctx context.Context, inv *bundle.Inventory, index []byte) error {
	plan, err := bundle.PlanArchive(inv, index, b.o.Signer)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(b.o.Out), "."+filepath.Base(b.o.Out)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	defer func() { _ = os.Remove(f.Name()) }()
	err = b.fill(ctx, f, plan)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write bundle %s: %w", b.o.Out, err)
	}
	if err := os.Rename(f.Name(), b.o.Out); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return fsutil.SyncDir(filepath.Dir(b.o.Out))
}

// fill writes the plan into f: head, headers and padding, and the blobs.
func (b *builder) fill(ctx context.Context, f *os.File, plan *bundle.ArchivePlan) error {
	if err := f.Truncate(plan.Size); err != nil {
		return err
	}
	if _, err := f.WriteAt(plan.Head, 0); err != nil {
		return err
	}
	zeros := make([]byte, 2*512)
	if _, err := f.WriteAt(zeros, plan.Size-int64(len(zeros))); err != nil { // tar's end
		return err
	}
	order := make([]int, len(plan.Blobs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return plan.Blobs[order[i]].Size > plan.Blobs[order[j]].Size })
	var total int64
	for _, pl := range plan.Blobs {
		total += pl.Size
	}
	b.log.Info("writing bundle", "blobs", len(plan.Blobs), "bytes", total, "parallel", b.o.Parallel)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.o.Parallel)
	for _, i := range order {
		pl := plan.Blobs[i]
		g.Go(func() error {
			if _, err := f.WriteAt(pl.Header, pl.Offset); err != nil {
				return err
			}
			if _, err := f.WriteAt(zeros[:pl.Pad], pl.Data+pl.Size); err != nil {
				return err
			}
			w := io.NewOffsetWriter(f, pl.Data)
			if it, ok := b.fetch[pl.Digest]; ok && !b.cache.has(pl.Digest, it.size) {
				return b.download1(gctx, pl.Digest, it, w)
			}
			return b.copyCached(gctx, pl.Blob, w)
		})
	}
	return g.Wait()
}

// copyCached copies a blob from the cache (or its local file) into w,
// checking its size and sha256: the cache may have been altered since
// the run that filled it.
func (b *builder) copyCached(ctx context.Context, bl bundle.Blob, w io.Writer) error {
	rc, err := b.cache.Open(bl.Digest)
	if err != nil {
		return fmt.Errorf("write bundle: blob %s: %w", bl.Digest, err)
	}
	defer rc.Close()
	r := fsutil.ContextReader(ctx, rc)
	if b.o.Progress != nil {
		r = countingReader{r, b.o.Progress}
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(io.MultiWriter(w, h), io.LimitReader(r, bl.Size+1), buf)
	if err != nil {
		return fmt.Errorf("write bundle: blob %s: %w", bl.Digest, err)
	}
	if n != bl.Size || "sha256:"+hex.EncodeToString(h.Sum(nil)) != strings.ToLower(bl.Digest) {
		return fmt.Errorf("write bundle: blob %s: the source changed: it no longer has %d bytes hashing to %s (the cache or the file was altered; delete it from the cache and run again)", bl.Digest, bl.Size, bl.Digest)
	}
	return nil
}
