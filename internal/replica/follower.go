package replica

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"
)

// Follower keeps a replica's state current with its writer's.
type Follower struct {
	objects  Objects
	apply    func(State) error
	tick     func(context.Context) error
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu     sync.Mutex
	status Status
}

// Status is what a replica knows of its writer's state.
type Status struct {
	// Version and Published are those of the state in force.
	Version   uint64    `json:"version"`
	Published time.Time `json:"published,omitzero"`
	// Checked is when the store was last read successfully.
	Checked time.Time `json:"checked,omitzero"`
	// Mode is the writer's mode in that state.
	Mode Mode `json:"mode"`
	// Error is why the last poll failed ("" when it did not): the
	// replica goes on with the state in force.
	Error string `json:"error,omitempty"`
}

// NewFollower reads the state from objects every interval and hands each
// new version to apply; tick runs first on every poll (a replica drops
// its caches there, so nothing it caches is older than one interval).
func NewFollower(objects Objects, apply func(State) error, tick func(context.Context) error, interval time.Duration, log *slog.Logger) (*Follower, error) {
	if objects == nil || apply == nil || interval <= 0 {
		return nil, errors.New("new follower: objects, apply and a positive interval are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if tick == nil {
		tick = func(context.Context) error { return nil }
	}
	return &Follower{objects: objects, apply: apply, tick: tick, interval: interval, log: log, now: time.Now}, nil
}

// ErrNoState marks a bucket whose writer has published no state yet.
var ErrNoState = errors.New("the writer has published no state yet")

// Status reports the state in force and the last poll's error.
func (f *Follower) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// Sync polls once: it reads the pointer and, when it names a version
// other than the one in force, that version's object, checks its sum and
// applies it. On any error the state in force stays.
func (f *Follower) Sync(ctx context.Context) error {
	err := f.sync(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.status.Error = err.Error()
		return err
	}
	f.status.Error = ""
	f.status.Checked = f.now().UTC()
	return nil
}

func (f *Follower) sync(ctx context.Context) error {
	ptr, err := readPointer(ctx, f.objects)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%s is missing): start the writer, which publishes it", ErrNoState, CurrentObject)
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	f.mu.Lock()
	have := f.status.Version
	f.mu.Unlock()
	if ptr.Version == have {
		return nil
	}
	data, err := f.objects.Get(ctx, ptr.Object)
	if err != nil {
		return fmt.Errorf("read state version %d: %w", ptr.Version, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != ptr.SHA256 {
		return fmt.Errorf("%w: %s does not match the sha256 that %s gives", ErrBadState, ptr.Object, CurrentObject)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadState, ptr.Object, err)
	}
	if s.Version != ptr.Version {
		return fmt.Errorf("%w: %s holds version %d", ErrBadState, ptr.Object, s.Version)
	}
	if err := f.apply(s); err != nil {
		return fmt.Errorf("apply state version %d: %w", s.Version, err)
	}
	f.mu.Lock()
	f.status.Version, f.status.Published, f.status.Mode = s.Version, s.Published, s.Mode
	f.mu.Unlock()
	f.log.Info("state of the writer applied", "version", s.Version, "published", s.Published, "users", len(s.Users), "projects", len(s.Projects))
	return nil
}

// Run polls every interval until ctx ends. A failed poll is logged once
// per outage; the state in force stays until a poll succeeds.
func (f *Follower) Run(ctx context.Context) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := errors.Join(f.tick(ctx), f.Sync(ctx))
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			f.log.Error("cannot read the writer's state; serving with the last one", "version", f.Status().Version, "error", err)
			failing = true
		case err == nil && failing:
			f.log.Info("the writer's state is readable again", "version", f.Status().Version)
			failing = false
		}
	}
}
