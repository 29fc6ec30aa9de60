// Package version reports the build's version, commit and Go toolchain.
// Version and Commit are set at link time by the Makefile
// (-ldflags "-X …/internal/version.Version=…"); without them the values come
// from the module's build information.
package version

import (
	"runtime"
	"runtime/debug"
)

// Set at link time; see the Makefile.
var (
	Version = ""
	Commit  = ""
)

// Info describes this build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns the build information, filling gaps from debug.ReadBuildInfo.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" {
				info.Commit = s.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}
