package action

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Advisor is implemented by the Params of an action type that can tell,
// on the host that will run it, what would keep it from doing what its
// configuration says: a placeholder left from the example configuration,
// a directory or a command that is not there. Advice is never an error:
// `selfheal check-config` prints it and `selfheal serve` logs it at start.
type Advisor interface {
	// Advice returns one message per thing to look at, each beginning with
	// the key it is about.
	Advice(h Host) []string
}

// Host is what an Advisor may look at, so that advice can be tested
// against a host of the test's making.
type Host struct {
	// Exists reports whether a path exists.
	Exists func(path string) bool
	// Executable reports whether a command name (a path or a name looked
	// up in PATH) can be run.
	Executable func(name string) bool
}

// ThisHost is the host selfheal runs on.
func ThisHost() Host {
	return Host{
		Exists: func(p string) bool { _, err := os.Stat(p); return err == nil },
		Executable: func(name string) bool {
			_, err := exec.LookPath(name)
			return err == nil
		},
	}
}

// examplePlaceholders are addresses in selfheal's example configuration
// (deploy/selfheal.yml) that stand for an operator's own services.
var examplePlaceholders = []string{
	"app@localhost/app",
	"localhost:9000/minio",
	"localhost:8000/v1/cache/clear",
}

// Placeholder reports whether s is, or contains, one of the example
// configuration's placeholder addresses, or a host under example.com,
// example.net or example.org.
func Placeholder(s string) bool {
	for _, p := range examplePlaceholders {
		if strings.Contains(s, p) {
			return true
		}
	}
	for _, d := range []string{"example.com", "example.net", "example.org"} {
		if strings.Contains(s, "@"+d) || strings.Contains(s, "//"+d) || strings.Contains(s, "."+d) {
			return true
		}
	}
	return false
}

// PlaceholderAdvice is the message for a key whose value is a placeholder.
func PlaceholderAdvice(key, value string) string {
	return fmt.Sprintf("%s: %q is the example configuration's placeholder: point it at your own service, or remove it", key, value)
}
