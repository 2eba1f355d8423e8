package model

import (
	"fmt"
	"unicode/utf8"
)

// Truncate shortens s to at most n bytes, on a rune boundary, saying how
// much was left out.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d more bytes)", s[:cut], len(s)-cut)
}
