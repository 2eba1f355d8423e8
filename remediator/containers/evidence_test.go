package containers_test

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/policy"
)

func evidenceClient(t *testing.T, o containers.EvidenceOptions) *containers.Client {
	t.Helper()
	c := newClient(t)
	c.Reconfigure(containers.Options{RequireLabel: requireLabel, StopTimeout: 2 * time.Second, Evidence: o})
	return c
}

// exited waits until the container has stopped by itself.
func exited(t *testing.T, name string) {
	t.Helper()
	dockertest.WaitFor(t, 30*time.Second, name+" exited", func() bool {
		st := dockertest.State(t, name)
		return !st.Running && st.FinishedAt != "0001-01-01T00:00:00Z"
	})
}

func redactions(t *testing.T) []*regexp.Regexp {
	t.Helper()
	var res []*regexp.Regexp
	for _, r := range policy.DefaultRedactions {
		res = append(res, regexp.MustCompile(r))
	}
	return res
}

// TestEvidenceOfACrash: a container that printed known lines and exited 3
// leaves its last lines (secrets redacted), its exit code, OOMKilled false
// and how long it ran.
func TestEvidenceOfACrash(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Args: []string{
		"-say=connecting to postgres://app:hunter2@db:5432/app", "-say=using token=abc123XYZ and password: 's3cret'",
		"-say=fatal: configuration file /etc/app.yml: unknown key 'listen'", "-exit-after=300ms", "-exit-code=3"}})
	exited(t, name)
	c := evidenceClient(t, containers.EvidenceOptions{LogLines: 50, LogBytes: 8192, Redact: redactions(t)})
	ev, err := c.Evidence(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Container != name || ev.Status != "exited" || ev.ExitCode != 3 || ev.OOMKilled || ev.RanFor <= 0 || ev.RanFor > 10 {
		t.Errorf("evidence %+v", ev)
	}
	for _, want := range []string{"testctr started", "fatal: configuration file /etc/app.yml: unknown key 'listen'",
		"postgres://app:[REDACTED]@db:5432/app", "token=[REDACTED] and password: '[REDACTED]'"} {
		if !strings.Contains(ev.Logs, want) {
			t.Errorf("logs lack %q:\n%s", want, ev.Logs)
		}
	}
	for _, secret := range []string{"hunter2", "abc123XYZ", "s3cret"} {
		if strings.Contains(ev.Logs, secret) {
			t.Errorf("logs keep the secret %q:\n%s", secret, ev.Logs)
		}
	}
	if s := ev.Summary(); !strings.HasPrefix(s, "exited, exit code 3, OOM-killed false, ran ") {
		t.Errorf("summary %q", s)
	}
	// The last two lines, oldest first. testctr writes the -say lines to
	// stderr and "testctr started" to stdout: Docker merges the two
	// streams in an order of its own, so the last two are read from the
	// logs rather than assumed.
	lines := strings.Split(strings.TrimRight(ev.Logs, "\n"), "\n")
	if got, want := ev.LastLines(2, 1024), strings.Join(lines[len(lines)-2:], "\n"); got != want || len(lines) != 4 {
		t.Errorf("last two lines %q, want %q (of %d)", got, want, len(lines))
	}
	if got := ev.LastLines(2, 20); len(got) > 20 || strings.Contains(got, "\n") || got == "" {
		t.Errorf("last lines within 20 bytes: %q", got)
	}

	// Not opted in: no evidence either.
	other := dockertest.Run(t, dockertest.Spec{Stopped: true})
	if _, err := c.Evidence(context.Background(), other); !errors.Is(err, containers.ErrNotPermitted) {
		t.Errorf("evidence of a container not opted in: %v", err)
	}
}

// TestEvidenceOfAnOOMKill: a container the kernel really OOM-killed (a
// memory limit, a program that allocates past it) says so.
func TestEvidenceOfAnOOMKill(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Memory: 32 << 20, Args: []string{"-alloc-mb=256"}})
	exited(t, name)
	ev, err := evidenceClient(t, containers.EvidenceOptions{LogLines: 10, LogBytes: 1024}).Evidence(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.OOMKilled || ev.ExitCode != 137 {
		t.Errorf("evidence %+v, want OOM-killed with exit code 137", ev)
	}
}

// TestEvidenceOfAFloodIsBounded: 100 MB of logs, read whole (log_lines
// above their count), cost the bound and not the flood, in memory and in
// what is kept.
func TestEvidenceOfAFloodIsBounded(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Args: []string{"-log-bytes=100000000", "-say=the last line"}})
	c := evidenceClient(t, containers.EvidenceOptions{LogLines: 10_000_000, LogBytes: 8192})
	// All of it written (the log ends with testctr's own line, after the flood).
	dockertest.WaitFor(t, 60*time.Second, "100 MB of logs", func() bool {
		ev, err := c.Evidence(context.Background(), name)
		return err == nil && strings.HasSuffix(ev.Logs, "testctr started\n")
	})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	ev, err := c.Evidence(context.Background(), name)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Logs) > 8192 || !ev.LogsTruncated || !strings.HasSuffix(ev.Logs, "testctr started\n") {
		t.Errorf("kept %d bytes (truncated %t), ending %q", len(ev.Logs), ev.LogsTruncated, ev.Logs[max(0, len(ev.Logs)-40):])
	}
	// Reading streams the logs through a 32 KiB copy buffer and an 8 KiB
	// tail: a few MiB of garbage at most, never the 100 MB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("reading the evidence allocated %d MiB", alloc>>20)
	}
	t.Logf("read 100 MB of logs in %s", elapsed)
}
