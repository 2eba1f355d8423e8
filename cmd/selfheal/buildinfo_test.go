package main

import (
	"runtime/debug"
	"testing"

	"github.com/prometheus/common/version"
)

func TestFillVersionFromBuildInfo(t *testing.T) {
	saved := []string{version.Version, version.Revision, version.BuildDate}
	t.Cleanup(func() { version.Version, version.Revision, version.BuildDate = saved[0], saved[1], saved[2] })
	bi := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "2ad227a0c0ffee"}, {Key: "vcs.time", Value: "2026-12-01T23:10:00Z"},
		{Key: "vcs.modified", Value: "true"}}}

	// A plain go build: nothing stamped, everything from the build info.
	version.Version, version.Revision, version.BuildDate = "", "", ""
	fillVersion(bi, true)
	if version.Version != "devel" || version.Revision != "2ad227a0c0ffee-modified" || version.BuildDate != "2026-12-01T23:10:00Z" {
		t.Errorf("from build info: version %q, revision %q, date %q", version.Version, version.Revision, version.BuildDate)
	}

	// go install module@v0.9.0: the module's version.
	version.Version, version.Revision, version.BuildDate = "", "", ""
	fillVersion(&debug.BuildInfo{Main: debug.Module{Version: "v0.9.0"}}, true)
	if version.Version != "v0.9.0" {
		t.Errorf("installed module: version %q, want v0.9.0", version.Version)
	}

	// make build: what -ldflags stamped stays.
	version.Version, version.Revision, version.BuildDate = "0.9.0", "abc", "20261201-23:10:00"
	fillVersion(bi, true)
	if version.Version != "0.9.0" || version.Revision != "abc" || version.BuildDate != "20261201-23:10:00" {
		t.Errorf("stamped: version %q, revision %q, date %q", version.Version, version.Revision, version.BuildDate)
	}
}
