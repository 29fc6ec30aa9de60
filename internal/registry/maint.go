package registry

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/registry/storage"
)

// fsck, gc and the visibility index are package storage's, which reads
// and maintains the layout on disk; the registry hands it its turns
// (turns.go), its manifest cache's generations (cache.go) and the blobs
// clients asked about (turns.go), and answers for it here, so that its
// callers see one Registry. The types are storage's, under the names
// they have always had here.

// DefaultGrace is how long gc keeps what was written or asked about
// recently even when nothing references it yet (see storage.DefaultGrace).
const DefaultGrace = storage.DefaultGrace

// StagingProject is the project of the importer's per-import staging
// repositories: they hold blob links while an import streams, are never
// visible, and what a refused or killed import left in them is garbage.
const StagingProject = storage.StagingProject

// IsStaging tells whether repo is a staging repository of the importer.
func IsStaging(repo string) bool { return storage.IsStaging(repo) }

type (
	// CheckOptions say how thorough Check is.
	CheckOptions = storage.CheckOptions
	// CheckReport is what Check looked at and found.
	CheckReport = storage.CheckReport
	// Problem is one thing Check found wrong.
	Problem = storage.Problem
	// Removal is one thing Repair or GC removed (or, in a dry run, would).
	Removal = storage.Removal
	// GCOptions configure a garbage collection.
	GCOptions = storage.GCOptions
	// GCReport is what a garbage collection removed (or would remove).
	GCReport = storage.GCReport
)

// Kinds of Problem (see storage.ProblemCorruptBlob and the rest).
const (
	ProblemCorruptBlob     = storage.ProblemCorruptBlob
	ProblemUnreadableBlob  = storage.ProblemUnreadableBlob
	ProblemStrayPath       = storage.ProblemStrayPath
	ProblemDanglingTag     = storage.ProblemDanglingTag
	ProblemDanglingLink    = storage.ProblemDanglingLink
	ProblemInvalidManifest = storage.ProblemInvalidManifest
	ProblemMissingBlob     = storage.ProblemMissingBlob
	ProblemSizeMismatch    = storage.ProblemSizeMismatch
	WarningMissingChild    = storage.WarningMissingChild
	WarningMissingSubject  = storage.WarningMissingSubject
)

// Check verifies the registry's storage and reports every problem,
// changing nothing, beside pulls, pushes and imports (storage.Store.Check).
func (r *Registry) Check(ctx context.Context, opts CheckOptions) (CheckReport, error) {
	return r.store.Check(ctx, opts)
}

// Repair removes what is provably broken among problems, and nothing
// else, holding the registry alone (storage.Store.Repair).
// A read-only replica refuses it, naming its writer (ErrReplica).
func (r *Registry) Repair(ctx context.Context, problems []Problem) ([]Removal, error) {
	if err := r.RefusedOnReplica(); err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	return r.store.Repair(ctx, problems)
}

// GC removes what nothing visible references, taking turns with writers
// and giving up with ErrBusy when ctx ends before they leave it a moment
// (storage.Store.GC).
// A read-only replica refuses it, naming its writer (ErrReplica): gc is
// the writer's.
func (r *Registry) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	if err := r.RefusedOnReplica(); err != nil {
		return GCReport{}, fmt.Errorf("gc: %w", err)
	}
	return r.store.GC(ctx, opts)
}

// BlobVisible tells whether the registry holds blob d and a visible
// manifest references it (or it is such a manifest): what an import that
// does not carry a blob may count on.
func (r *Registry) BlobVisible(ctx context.Context, d digest.Digest) (bool, error) {
	visible, err := r.store.Visible(ctx, d)
	if err != nil || !visible {
		return false, err
	}
	_, ok, err := r.StatBlob(ctx, d)
	return ok, err
}
