package main

import (
	"runtime/debug"

	"github.com/prometheus/common/version"
)

// fillVersion completes what the build's -ldflags left empty (a plain
// `go build` or `go install`) from what Go itself records in the binary:
// the module's version, the VCS revision and its commit time. So
// --version, selfheal_build_info, the status page and the man page always
// say which code they are. make build and the packages stamp all of it.
func fillVersion(bi *debug.BuildInfo, ok bool) {
	if !ok {
		return
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if version.Version == "" {
		version.Version = bi.Main.Version
		if version.Version == "" || version.Version == "(devel)" {
			version.Version = "devel"
		}
	}
	if version.Revision == "" {
		if rev := settings["vcs.revision"]; rev != "" {
			if settings["vcs.modified"] == "true" {
				rev += "-modified"
			}
			version.Revision = rev
		}
	}
	if version.BuildDate == "" {
		version.BuildDate = settings["vcs.time"]
	}
}

func init() { fillVersion(debug.ReadBuildInfo()) }
