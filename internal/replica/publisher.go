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

// Objects are the small objects of the state in the object store. Get of
// a missing object returns an error matching fs.ErrNotExist.
type Objects interface {
	Get(ctx context.Context, name string) ([]byte, error)
	Put(ctx context.Context, name string, data []byte) error
	Delete(ctx context.Context, name string) error
}

// keptVersions is how many versions stay besides the current one, for a
// replica that read the pointer just before it moved.
const keptVersions = 2

// Publisher publishes a writer's state whenever it changes.
type Publisher struct {
	objects  Objects
	source   func() (State, error)
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time
	kick     chan struct{}

	mu sync.Mutex // one publish at a time
}

// NewPublisher publishes what source returns (without version and time)
// to objects, looking for a change every interval and whenever Kick is
// called.
func NewPublisher(objects Objects, source func() (State, error), interval time.Duration, log *slog.Logger) (*Publisher, error) {
	if objects == nil || source == nil || interval <= 0 {
		return nil, errors.New("new publisher: objects, source and a positive interval are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Publisher{objects: objects, source: source, interval: interval, log: log, now: time.Now, kick: make(chan struct{}, 1)}, nil
}

// Kick asks for a publish now (after a change through the API); it never
// blocks.
func (p *Publisher) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Publish writes the state if it differs from the one published last
// and reports whether it wrote. What was published last is what the
// pointer says (one small read), so a restarted writer goes on from the
// version its predecessor reached.
func (p *Publisher) Publish(ctx context.Context) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, err := readPointer(ctx, p.objects)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("publish state: %w", err)
	}
	s, err := p.source()
	if err != nil {
		return false, fmt.Errorf("publish state: %w", err)
	}
	s.Format = Format
	content, err := contentSum(s)
	if err != nil {
		return false, fmt.Errorf("publish state: %w", err)
	}
	if content == cur.Content {
		return false, nil
	}
	s.Version, s.Published = cur.Version+1, p.now().UTC()
	data, err := json.Marshal(s)
	if err != nil {
		return false, fmt.Errorf("publish state: %w", err)
	}
	sum := sha256.Sum256(data)
	ptr, err := json.Marshal(pointer{Version: s.Version, Object: objectName(s.Version), SHA256: hex.EncodeToString(sum[:]), Content: content})
	if err != nil {
		return false, fmt.Errorf("publish state: %w", err)
	}
	// The object first, then the pointer to it: a reader sees the old
	// version or the new one, whole.
	if err := p.objects.Put(ctx, objectName(s.Version), data); err != nil {
		return false, fmt.Errorf("publish state version %d: %w", s.Version, err)
	}
	if err := p.objects.Put(ctx, CurrentObject, ptr); err != nil {
		return false, fmt.Errorf("publish state version %d: %w", s.Version, err)
	}
	if s.Version > keptVersions {
		if err := p.objects.Delete(ctx, objectName(s.Version-keptVersions-1)); err != nil {
			p.log.Warn("could not remove an old state version", "version", s.Version-keptVersions-1, "error", err)
		}
	}
	p.log.Info("state published", "version", s.Version, "users", len(s.Users), "projects", len(s.Projects))
	return true, nil
}

// Run publishes every interval and on every Kick until ctx ends. A
// failed publish is logged and tried again at the next turn.
func (p *Publisher) Run(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	failing := false
	for {
		if _, err := p.Publish(ctx); err != nil {
			if !failing && ctx.Err() == nil {
				p.log.Error("state not published; replicas keep the last one", "error", err)
			}
			failing = true
		} else if failing {
			p.log.Info("state published again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.kick:
		}
	}
}

func readPointer(ctx context.Context, objects Objects) (pointer, error) {
	data, err := objects.Get(ctx, CurrentObject)
	if err != nil {
		return pointer{}, err
	}
	var ptr pointer
	if err := json.Unmarshal(data, &ptr); err != nil || ptr.Version == 0 || ptr.Object != objectName(ptr.Version) {
		return pointer{}, fmt.Errorf("%w: the pointer object %s is not a state pointer: %.200q", ErrBadState, CurrentObject, data)
	}
	return ptr, nil
}
