package importer

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/importer/tarstream"
)

// ImportDir imports an OCI image layout folder (mounted media, or what
// skopeo, crane or Hauler wrote). The folder is read as a tar stream made
// on the fly, so it passes exactly the checks an archive does: symbolic
// links become link entries, judged by the same rules.
func (imp *Importer) ImportDir(ctx context.Context, dir string, req Request) (*history.Record, error) {
	info, err := os.Stat(dir)
	if err != nil {
		rec := imp.begin(req)
		return imp.finish(rec, &Error{Op: "read", Source: req.Source, Err: err})
	}
	if !info.IsDir() {
		rec := imp.begin(req)
		return imp.finish(rec, &Error{Op: "read", Source: req.Source, Err: fmt.Errorf("%s is not a folder", dir)})
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarstream.TarFolder(ctx, dir, pw)) }()
	defer pr.Close()
	req.Reader = pr
	return imp.Import(ctx, req)
}
