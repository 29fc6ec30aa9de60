package docs

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// contained lists libraries that only one part of the tree may import
// (docs/architecture.md): the folder, and the import paths it keeps.
var contained = []struct {
	dir      string
	prefixes []string
}{
	{"internal/registry", []string{"github.com/distribution/distribution/", "github.com/sirupsen/logrus"}},
}

// TestContainedImports fails for any Go file, tests included, that imports
// a contained library from outside the folder that keeps it.
func TestContainedImports(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "data") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			for _, c := range contained {
				if strings.HasPrefix(rel, c.dir+"/") {
					continue
				}
				for _, prefix := range c.prefixes {
					if strings.HasPrefix(p, prefix) {
						t.Errorf("%s imports %s, which only %s/ may import", rel, p, c.dir)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
