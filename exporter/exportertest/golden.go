// Package exportertest compares a collector's full exposition with a
// golden file. Run a package's tests with -update to rewrite its golden
// files after a deliberate change, and review the diff.
package exportertest

import (
	"bytes"
	"flag"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

var update = flag.Bool("update", false, "rewrite golden files")

// Collector is exporter.Collector, repeated here so that the collectors'
// own tests can use this package without an import cycle.
type Collector interface {
	Update(ch chan<- prometheus.Metric) error
}

type adapter struct{ c Collector }

func (a adapter) Describe(chan<- *prometheus.Desc) {}

func (a adapter) Collect(ch chan<- prometheus.Metric) {
	if err := a.c.Update(ch); err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("update_error", "", nil, nil), err)
	}
}

// Exposition returns c's metrics in the text format, sorted, checked by a
// pedantic registry. An Update error fails t.
func Exposition(t testing.TB, c Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(adapter{c})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// Compare checks c's exposition against the golden file at path.
func Compare(t testing.TB, c Collector, path string) {
	t.Helper()
	got := Exposition(t, c)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("exposition differs from %s (run with -update and review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
