package aptrepo

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// PoolProblem is one package file of a published pool that is not what
// the publish's Packages index says.
type PoolProblem struct {
	Repo    string `json:"repo"`
	Dist    string `json:"dist"`
	Publish string `json:"publish"`
	// File is the path apt fetches: pool/<component>/…/<file>.deb.
	File    string `json:"file"`
	Package string `json:"package,omitempty"` // name_version_architecture
	Detail  string `json:"detail"`
}

// PoolReport is what VerifyPools read and found.
type PoolReport struct {
	Publishes int           `json:"publishes"`
	Packages  int           `json:"packages"`
	Bytes     int64         `json:"bytes"`
	Problems  []PoolProblem `json:"problems"`
}

// VerifyPools checks every .deb that a kept publish serves (the current
// ones and those kept for rollback) against the size and SHA256 that the
// publish's own Packages files give, as apt would. It changes nothing,
// and holds the repositories' lock only to list the publishes, so adds
// and removals go on; a publish dropped meanwhile is not reported.
func (r *Repos) VerifyPools(ctx context.Context) (PoolReport, error) {
	type pub struct{ repo, dist, id string }
	if err := r.lock(); err != nil {
		return PoolReport{}, &Error{Op: "verify", Err: err}
	}
	var pubs []pub
	for _, repo := range slices.Sorted(keysOf(r.st.Repos)) {
		for _, dist := range slices.Sorted(keysOf(r.st.Repos[repo])) {
			for _, p := range r.st.Repos[repo][dist].History {
				if p.Kept {
					pubs = append(pubs, pub{repo, dist, p.ID})
				}
			}
		}
	}
	r.mu.Unlock()
	rep := PoolReport{Problems: []PoolProblem{}}
	// The pools of kept publishes are hard links to one package pool:
	// a file is hashed once, however many publishes serve it.
	type sound struct {
		info os.FileInfo
		sum  string
	}
	var verified []sound
	buf := make([]byte, 1<<20)
	for _, p := range pubs {
		tree := filepath.Join(r.public, p.id)
		entries, err := publishedPackages(filepath.Join(tree, "dists", p.dist))
		if errors.Is(err, fs.ErrNotExist) && !r.stillKept(p.repo, p.dist, p.id) {
			continue
		}
		if err != nil {
			rep.Problems = append(rep.Problems, PoolProblem{Repo: p.repo, Dist: p.dist, Publish: p.id, Detail: "the publish's Packages files cannot be read: " + err.Error()})
			continue
		}
		rep.Publishes++
	files:
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			rep.Packages++
			rep.Bytes += e.size
			fail := func(detail string) {
				rep.Problems = append(rep.Problems, PoolProblem{Repo: p.repo, Dist: p.dist, Publish: p.id, File: e.filename, Package: e.pkg, Detail: detail})
			}
			file := filepath.Join(tree, filepath.FromSlash(e.filename))
			info, err := os.Stat(file)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && !r.stillKept(p.repo, p.dist, p.id) {
					continue
				}
				fail("the package file cannot be read: " + err.Error())
				continue
			}
			for _, v := range verified {
				if v.sum == e.sha256 && os.SameFile(v.info, info) && v.info.Size() == info.Size() && v.info.ModTime().Equal(info.ModTime()) {
					continue files
				}
			}
			sum, n, err := hashFile(ctx, file, buf)
			switch {
			case ctx.Err() != nil:
				return rep, ctx.Err()
			case err != nil:
				fail("the package file cannot be read: " + err.Error())
			case sum != e.sha256:
				fail(fmt.Sprintf("the package file (%d bytes) hashes to sha256 %s, its Packages index says %s", n, sum, e.sha256))
			case e.size >= 0 && n != e.size:
				fail(fmt.Sprintf("the package file is %d bytes, its Packages index says %d", n, e.size))
			default:
				verified = append(verified, sound{info: info, sum: sum})
			}
		}
	}
	return rep, nil
}

// stillKept tells whether a publish is still on disk by the state.
func (r *Repos) stillKept(repo, dist, id string) bool {
	if err := r.lock(); err != nil {
		return false
	}
	defer r.mu.Unlock()
	ds := r.st.dist(repo, dist)
	if ds == nil {
		return false
	}
	i, ok := ds.find(id)
	return ok && ds.History[i].Kept
}

// indexEntry is one package as a Packages file lists it.
type indexEntry struct {
	filename, sha256, pkg string
	size                  int64
}

// publishedPackages reads every Packages file under a distribution's
// dists/ folder (each binary-<arch> of each component; by-hash copies
// left out) and returns the files they list, each once.
func publishedPackages(dir string) ([]indexEntry, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	var out []indexEntry
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "by-hash" {
			return filepath.SkipDir
		}
		if d.IsDir() || d.Name() != "Packages" {
			return nil
		}
		entries, err := readPackagesFile(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !seen[e.filename+" "+e.sha256] {
				seen[e.filename+" "+e.sha256] = true
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

// readPackagesFile parses the stanzas of one Packages file.
func readPackagesFile(file string) ([]indexEntry, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []indexEntry
	var cur map[string]string
	flush := func() error {
		if cur == nil {
			return nil
		}
		e := indexEntry{filename: cur["filename"], sha256: strings.ToLower(cur["sha256"]), size: -1,
			pkg: cur["package"] + "_" + cur["version"] + "_" + cur["architecture"]}
		if n, err := strconv.ParseInt(cur["size"], 10, 64); err == nil {
			e.size = n
		}
		cur = nil
		if e.filename == "" || e.sha256 == "" {
			return fmt.Errorf("%s: a stanza (%s) without Filename or SHA256", file, e.pkg)
		}
		if clean := path.Clean(e.filename); clean != e.filename || strings.HasPrefix(clean, "/") || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("%s: unsafe Filename %q", file, e.filename)
		}
		out = append(out, e)
		return nil
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // a continuation line (Description)
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if cur == nil {
			cur = map[string]string{}
		}
		cur[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func hashFile(ctx context.Context, file string, buf []byte) (string, int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return "", n, err
		}
		k, err := f.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", n, err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
