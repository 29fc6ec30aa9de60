package registry

import "fmt"

// maintenance is the registry's state for fsck, gc and the importer's
// visibility checks.
type maintenance struct {
	turns   turns           // gc takes turns with writers (turns.go)
	asked   askedBlobs      // blobs clients found present (turns.go)
	visible visibleIndex    // which blobs a tag reaches (visible.go)
	parsed  referencesCache // what each manifest references (graph.go)

	// stopAt, when set (by this package's tests only), is asked at every
	// step of gc's sweep and stops it there with its error, as a kill
	// would.
	stopAt func(step string) error
}

// step is one point of gc's sweep.
func (m *maintenance) step(format string, args ...any) error {
	if m.stopAt == nil {
		return nil
	}
	return m.stopAt(fmt.Sprintf(format, args...))
}

func newMaintenance() *maintenance {
	return &maintenance{turns: newTurns()}
}
