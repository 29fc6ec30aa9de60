package registry

// maintenance is the registry's state for fsck, gc and the importer's
// visibility checks.
type maintenance struct {
	visible visibleIndex    // which blobs a tag reaches (visible.go)
	parsed  referencesCache // what each manifest references (graph.go)
}

func newMaintenance() *maintenance {
	return &maintenance{}
}
