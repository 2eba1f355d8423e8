// Package testenv holds what tests of several packages need from their
// environment: free ports, external tools, and waiting for a condition.
package testenv

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// Tool returns the path of an external program. A missing one skips the
// test, or fails it when requiredInCI and CI=true: in CI a missing
// component must never pass silently.
func Tool(t testing.TB, name string, requiredInCI bool) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if requiredInCI && os.Getenv("CI") == "true" {
			t.Fatalf("%s is required (CI=true)", name)
		}
		t.Skipf("no %s", name)
	}
	return p
}

// WaitFor polls cond until it holds, or fails t after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
