package auth

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/fsutil"
)

// ProjectsFile holds the projects set through the API.
const ProjectsFile = "projects.json"

// Errors about projects.
var (
	ErrInvalidProject    = errors.New("invalid project name")
	ErrProjectConfigured = errors.New("project is declared in the configuration file")
)

// Project is one project's visibility. Source says where it was set:
// "config" (the configuration file, which wins), "api", or "default" for a
// project nobody declared, which is public.
type Project struct {
	Name   string `json:"name"`
	Public bool   `json:"public"`
	Source string `json:"source"`
}

// ProjectOf returns the project of a repository name: its first component.
func ProjectOf(repository string) string {
	p, _, _ := strings.Cut(repository, "/")
	return p
}

// Projects answers whether a project is public. Projects declared in the
// configuration are fixed; others can be set through the API and persist.
type Projects struct {
	path       string
	configured map[string]bool

	mu     sync.RWMutex
	stored map[string]bool
}

// OpenProjects loads the stored projects at path; configured maps the
// projects of the configuration file to their public flag.
func OpenProjects(path string, configured map[string]bool) (*Projects, error) {
	p := &Projects{path: path, configured: configured, stored: map[string]bool{}}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return p, nil
	case err != nil:
		return nil, fmt.Errorf("open projects: %w", err)
	}
	var list []Project
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("open projects %s: corrupt: %w", path, err)
	}
	for _, pr := range list {
		p.stored[pr.Name] = pr.Public
	}
	return p, nil
}

// IsPublic tells whether anonymous callers may pull from project.
func (p *Projects) IsPublic(project string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if pub, ok := p.configured[project]; ok {
		return pub
	}
	if pub, ok := p.stored[project]; ok {
		return pub
	}
	return true
}

// Get returns a project's visibility and where it comes from.
func (p *Projects) Get(name string) Project {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if pub, ok := p.configured[name]; ok {
		return Project{Name: name, Public: pub, Source: "config"}
	}
	if pub, ok := p.stored[name]; ok {
		return Project{Name: name, Public: pub, Source: "api"}
	}
	return Project{Name: name, Public: true, Source: "default"}
}

// List returns the declared projects, plus any names in extra (for example
// the projects that hold repositories), sorted by name.
func (p *Projects) List(extra ...string) []Project {
	names := map[string]bool{}
	p.mu.RLock()
	for n := range p.configured {
		names[n] = true
	}
	for n := range p.stored {
		names[n] = true
	}
	p.mu.RUnlock()
	for _, n := range extra {
		names[n] = true
	}
	out := make([]Project, 0, len(names))
	for n := range names {
		out = append(out, p.Get(n))
	}
	slices.SortFunc(out, func(a, b Project) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Set records a project's visibility. Projects of the configuration file
// cannot be changed here.
func (p *Projects) Set(name string, public bool) (Project, error) {
	if !config.ValidProjectName(name) {
		return Project{}, fmt.Errorf("set project %q: %w: use lower-case letters, digits and separators (. _ -)", name, ErrInvalidProject)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.configured[name]; ok {
		return Project{}, fmt.Errorf("set project %q: %w; change it there", name, ErrProjectConfigured)
	}
	old, had := p.stored[name]
	p.stored[name] = public
	if err := p.saveLocked(); err != nil {
		if had {
			p.stored[name] = old
		} else {
			delete(p.stored, name)
		}
		return Project{}, fmt.Errorf("set project %q: %w", name, err)
	}
	return Project{Name: name, Public: public, Source: "api"}, nil
}

func (p *Projects) saveLocked() error {
	list := make([]Project, 0, len(p.stored))
	for n, pub := range p.stored {
		list = append(list, Project{Name: n, Public: pub, Source: "api"})
	}
	slices.SortFunc(list, func(a, b Project) int { return cmp.Compare(a.Name, b.Name) })
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(p.path, data, 0o644)
}

// Replace makes list the projects, in memory only: a read-only replica
// follows its writer's projects so, those of the writer's configuration
// file (Source "config") as fixed ones. Every name is checked first; on
// an error nothing changes.
func (p *Projects) Replace(list []Project) error {
	configured, stored := map[string]bool{}, map[string]bool{}
	for _, pr := range list {
		if !config.ValidProjectName(pr.Name) {
			return fmt.Errorf("replace projects: %w: %q", ErrInvalidProject, pr.Name)
		}
		switch pr.Source {
		case "config":
			configured[pr.Name] = pr.Public
		case "api":
			stored[pr.Name] = pr.Public
		default:
			return fmt.Errorf("replace projects: %q: unknown source %q (want config or api)", pr.Name, pr.Source)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.configured, p.stored = configured, stored
	return nil
}
