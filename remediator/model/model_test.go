package model

import (
	"strings"
	"testing"

	"github.com/selfheal/selfheal/internal/testenv"
)

// TestImportsNothingOfSelfheal keeps the model a leaf: the engine and the
// store both build on it, so it may depend on neither of them, nor on
// anything else of selfheal's.
func TestImportsNothingOfSelfheal(t *testing.T) {
	for f, paths := range testenv.Imports(t) {
		for _, path := range paths {
			if strings.HasPrefix(path, "github.com/selfheal/selfheal/") {
				t.Errorf("%s imports %s", f, path)
			}
		}
	}
}
