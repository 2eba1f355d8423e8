package engine

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyStoreGoImportsTheStore keeps the engine's view of the database
// to its interfaces: store.go is the one file that names the store's
// types; every other file speaks the model's.
func TestOnlyStoreGoImportsTheStore(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no source files: %v", err)
	}
	importers := []string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			if path, _ := strconv.Unquote(imp.Path.Value); path == "github.com/selfheal/selfheal/remediator/store" {
				importers = append(importers, f)
			}
		}
	}
	if len(importers) != 1 || importers[0] != "store.go" {
		t.Errorf("files importing the store: %v, want only store.go", importers)
	}
}
