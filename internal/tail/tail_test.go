package tail

import (
	"strings"
	"testing"
)

func TestBufferKeepsTheNewestLines(t *testing.T) {
	b := New(16)
	for _, w := range []string{"first line\n", "second\n", "third line\n"} {
		if _, err := b.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.String(); got != "third line\n" || !b.Dropped() {
		t.Errorf("kept %q (dropped %t)", got, b.Dropped())
	}
	b = New(8)
	_, _ = b.Write([]byte(strings.Repeat("x", 100) + "\nend\n"))
	if got := b.String(); got != "end\n" || !b.Dropped() {
		t.Errorf("one big write: kept %q", got)
	}
	b = New(64)
	_, _ = b.Write([]byte("all of it\n"))
	if got := b.String(); got != "all of it\n" || b.Dropped() {
		t.Errorf("under the bound: kept %q (dropped %t)", got, b.Dropped())
	}
}
