package bundler

import (
	"context"
	"fmt"
	"strings"

	"github.com/appliance-dev/appliance/internal/aptrepo/mirror"
	"github.com/appliance-dev/appliance/internal/bundle"
)

// apt adds the packages of one apt entry of the spec, with their
// dependencies, fetched and verified against the upstream's signed Release
// by aptly's mirror code (internal/aptrepo/mirror).
func (b *builder) apt(ctx context.Context, a bundle.AptSpec) error {
	pkgs, err := mirror.Fetch(ctx, mirror.Spec{URL: a.URL, Distributions: a.Distributions, Components: a.Components,
		Architectures: a.Architectures, Packages: a.Packages, Keyring: a.Keyring}, b.cache.aptDir(), b.log)
	if err != nil {
		return err
	}
	for _, p := range pkgs {
		d := "sha256:" + p.SHA256
		dest := a.Repo + "/" + p.Distribution + "/" + p.Component
		b.mu.Lock()
		if b.heldDebs[dest+" "+d] {
			b.present[d] = p.Size
			b.mu.Unlock()
			continue
		}
		b.blobs[d] = p.Size
		b.mu.Unlock()
		b.cache.addLocal(d, p.Path)
		b.addArtifact(bundle.Artifact{Kind: bundle.KindApt, Source: strings.TrimRight(a.URL, "/") + "/" + p.Filename, Destination: dest,
			Digest: d, Size: p.Size, Version: a.Version, Refresh: a.Refresh,
			Metadata: map[string]string{"package": p.Name, "version": p.Version, "architecture": p.Architecture}}, zeroDesc)
	}
	if len(pkgs) == 0 {
		return fmt.Errorf("%s: no packages", a.URL)
	}
	return nil
}
