package tarstream

import (
	"archive/tar"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// TarFolder writes dir as a tar: regular files and symbolic links, in the
// order WalkDir gives (lexical), with neutral metadata. The CLI uses it to
// upload an OCI layout folder, the importer to read one.
func TarFolder(ctx context.Context, dir string, w io.Writer) error {
	// Files are opened through an os.Root: a file swapped for a link that
	// leaves the folder between the walk and the open is refused.
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeSymlink, Linkname: filepath.ToSlash(target), Mode: 0o777})
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			f, err := root.Open(filepath.FromSlash(rel))
			if err != nil {
				return err
			}
			defer f.Close()
			if err := tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Size: info.Size(), Mode: 0o644}); err != nil {
				return err
			}
			// A file that changed size since the walk fails here (tar
			// refuses a short or long body) rather than being misread.
			if _, err := io.Copy(tw, f); err != nil {
				return err
			}
			return nil
		}
		// Devices, sockets, pipes: emit them so the importer refuses them by name.
		return tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeChar})
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
