package engine

import (
	"slices"
	"sort"
	"testing"

	"github.com/selfheal/selfheal/internal/testenv"
)

// TestOnlyStoreGoImportsTheStore keeps the engine's view of the database
// to its interfaces: store.go is the one file that names the store's
// types; every other file speaks the model's.
func TestOnlyStoreGoImportsTheStore(t *testing.T) {
	importers := []string{}
	for f, paths := range testenv.Imports(t) {
		if slices.Contains(paths, "github.com/selfheal/selfheal/remediator/store") {
			importers = append(importers, f)
		}
	}
	sort.Strings(importers)
	if len(importers) != 1 || importers[0] != "store.go" {
		t.Errorf("files importing the store: %v, want only store.go", importers)
	}
}
