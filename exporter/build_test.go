package exporter_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"

	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/exporter/gpu/gputest"
)

// TestXIDCatalogueFlag: a catalogue file is read at start; one that
// cannot be used stops the start, naming the file and what is wrong.
func TestXIDCatalogueFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	bad := filepath.Join(dir, "bad.yml")
	_ = os.WriteFile(good, []byte("notify: [92]\n"), 0o644)
	_ = os.WriteFile(bad, []byte("reset: [48]\n"), 0o644)
	f, err := gputest.Load("gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{good, ""},
		{bad, `bad.yml: XID catalogue: unknown action "reset"`},
		{filepath.Join(dir, "absent.yml"), "XID catalogue: open"},
	} {
		app := kingpin.New("t", "")
		flags := exporter.AddFlags(app)
		if _, err := app.Parse([]string{"--collector.gpu.xid-catalogue=" + tc.file, "--collector.gpu.kernel-log="}); err != nil {
			t.Fatal(err)
		}
		_, err := exporter.Build(flags, exporter.Deps{Logger: slog.New(slog.DiscardHandler), NVML: gputest.NewServer(f, 1)})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.file, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.file, err, tc.want)
		}
	}
}
