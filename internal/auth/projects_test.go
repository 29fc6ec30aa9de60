package auth_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/auth"
)

func openProjects(t *testing.T, path string, configured map[string]bool) *auth.Projects {
	t.Helper()
	p, err := auth.OpenProjects(path, configured)
	if err != nil {
		t.Fatalf("OpenProjects(%s): %v", path, err)
	}
	return p
}

// TestProjectOf proves the project is the first path component.
func TestProjectOf(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"nvidia/gpu-operator":     "nvidia",
		"nvidia/cloud-native/gpu": "nvidia",
		"busybox":                 "busybox",
		"":                        "",
	}
	for repo, want := range tests {
		if got := auth.ProjectOf(repo); got != want {
			t.Errorf("ProjectOf(%q) = %q, want %q", repo, got, want)
		}
	}
}

// TestProjectsVisibility proves the resolution order: configuration first,
// then what was set through the API, then the public default.
func TestProjectsVisibility(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), auth.ProjectsFile)
	p := openProjects(t, path, map[string]bool{"vendor": false, "nvidia": true})
	if _, err := p.Set("team", false); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Set("open", true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want auth.Project
	}{
		{"vendor", auth.Project{Name: "vendor", Public: false, Source: "config"}},
		{"nvidia", auth.Project{Name: "nvidia", Public: true, Source: "config"}},
		{"team", auth.Project{Name: "team", Public: false, Source: "api"}},
		{"open", auth.Project{Name: "open", Public: true, Source: "api"}},
		{"nobody", auth.Project{Name: "nobody", Public: true, Source: "default"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := p.Get(tc.name); got != tc.want {
				t.Errorf("Get = %+v, want %+v", got, tc.want)
			}
			if got := p.IsPublic(tc.name); got != tc.want.Public {
				t.Errorf("IsPublic = %v, want %v", got, tc.want.Public)
			}
		})
	}
}

// TestProjectsConfiguredIsFixed proves a configured project cannot be Set,
// and that the configuration wins over a value stored earlier through the API.
func TestProjectsConfiguredIsFixed(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), auth.ProjectsFile)
	p := openProjects(t, path, map[string]bool{"vendor": false})
	for _, public := range []bool{true, false} {
		if _, err := p.Set("vendor", public); !errors.Is(err, auth.ErrProjectConfigured) {
			t.Errorf("Set(vendor, %v) = %v, want ErrProjectConfigured", public, err)
		}
	}
	if p.IsPublic("vendor") {
		t.Error("configured private project became public")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("refused Set wrote %s (stat: %v)", path, err)
	}

	// Stored through the API first, declared in the configuration later.
	if _, err := p.Set("team", false); err != nil {
		t.Fatal(err)
	}
	r := openProjects(t, path, map[string]bool{"team": true})
	if got := r.Get("team"); got != (auth.Project{Name: "team", Public: true, Source: "config"}) {
		t.Errorf("Get(team) = %+v, want the configured value", got)
	}
	if !r.IsPublic("team") {
		t.Error("stored value beat the configuration")
	}
	if list := r.List(); len(list) != 1 || list[0].Source != "config" {
		t.Errorf("List = %+v, want team once, from config", list)
	}
}

// TestProjectsPersistence proves Set is written to disk (and overwrites
// earlier values) so that a reopened store sees it.
func TestProjectsPersistence(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), auth.ProjectsFile)
	p := openProjects(t, path, nil)
	got, err := p.Set("team", false)
	if err != nil {
		t.Fatal(err)
	}
	if got != (auth.Project{Name: "team", Public: false, Source: "api"}) {
		t.Errorf("Set returned %+v", got)
	}
	if _, err := p.Set("other", false); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Set("other", true); err != nil {
		t.Fatal(err)
	}
	r := openProjects(t, path, nil)
	if r.IsPublic("team") {
		t.Error("reopened: team is public, want private")
	}
	if !r.IsPublic("other") || r.Get("other").Source != "api" {
		t.Errorf("reopened: other = %+v, want public from api", r.Get("other"))
	}
	want := []auth.Project{{Name: "other", Public: true, Source: "api"}, {Name: "team", Public: false, Source: "api"}}
	if got := r.List(); !reflect.DeepEqual(got, want) {
		t.Errorf("reopened List = %+v, want %+v", got, want)
	}
}

// TestProjectsSetInvalidName proves names that are not valid project names
// are refused with ErrInvalidProject and nothing is stored.
func TestProjectsSetInvalidName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"a.b_c__d--e9", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{"Team", false},
		{"team/sub", false},
		{"-team", false},
		{"team-", false},
		{"te am", false},
		{"a___b", false},
		{"a..b", false},
		{strings.Repeat("a", 129), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), auth.ProjectsFile)
			p := openProjects(t, path, nil)
			_, err := p.Set(tc.name, false)
			if tc.ok {
				if err != nil {
					t.Fatalf("Set: %v", err)
				}
				if p.IsPublic(tc.name) {
					t.Error("Set did not take effect")
				}
				return
			}
			if !errors.Is(err, auth.ErrInvalidProject) {
				t.Fatalf("Set = %v, want ErrInvalidProject", err)
			}
			if len(p.List()) != 0 {
				t.Errorf("List = %+v after a refused Set", p.List())
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("refused Set wrote the file (stat: %v)", err)
			}
		})
	}
}

// TestProjectsList proves List merges configured, stored and extra names,
// each once, sorted, with its effective visibility and source.
func TestProjectsList(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), auth.ProjectsFile)
	p := openProjects(t, path, map[string]bool{"vendor": false, "nvidia": true})
	if _, err := p.Set("team", false); err != nil {
		t.Fatal(err)
	}
	got := p.List("zeta", "nvidia", "alpha", "team", "alpha")
	want := []auth.Project{
		{Name: "alpha", Public: true, Source: "default"},
		{Name: "nvidia", Public: true, Source: "config"},
		{Name: "team", Public: false, Source: "api"},
		{Name: "vendor", Public: false, Source: "config"},
		{Name: "zeta", Public: true, Source: "default"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List = %+v\nwant   %+v", got, want)
	}
	if got := p.List(); len(got) != 3 {
		t.Errorf("List() without extras = %+v, want the 3 declared projects", got)
	}
}

// TestOpenProjectsCorrupt proves a damaged projects.json is an error.
func TestOpenProjectsCorrupt(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"{not json", `{"name":"a"}`, "\x00"} {
		path := filepath.Join(t.TempDir(), auth.ProjectsFile)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.OpenProjects(path, nil); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("OpenProjects(%q) = %v, want an error naming the file", content, err)
		}
	}
}
