// Package dockertest runs containers on the real Docker daemon for tests.
// No registry is reachable, so the one test image is built FROM scratch
// around testctr, a static Go binary. Every container carries the label
// selfheal.test=true and is force-removed when its test ends. With CI=true
// a missing daemon fails the test; otherwise the test is skipped.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/testenv"
)

// TestLabel marks every container a test creates; TestNameLabel names
// the test (a leftover container, or a count of starts from docker
// events, says whose it is).
const (
	TestLabel     = "selfheal.test"
	TestNameLabel = "selfheal.test.name"
)

var (
	once      sync.Once
	api       *client.Client
	testImage string
	setupErr  error
)

// Client returns a Docker client and the test image's tag, building the
// image on first use.
func Client(t testing.TB) (*client.Client, string) {
	t.Helper()
	once.Do(func() { api, testImage, setupErr = setup() })
	if setupErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Docker is required (CI=true): %v", setupErr)
		}
		t.Skipf("no Docker: %v", setupErr)
	}
	return api, testImage
}

func setup() (*client.Client, string, error) {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{}); err != nil {
		return nil, "", err
	}
	bin, err := buildTestctr()
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(bin)
	tag := "selfheal-testctr:" + hex.EncodeToString(sum[:6])
	if _, err := c.ImageInspect(context.Background(), tag); err == nil {
		return c, tag, nil
	}
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	dockerfile := []byte("FROM scratch\nCOPY testctr /testctr\nENTRYPOINT [\"/testctr\"]\n")
	for _, f := range []struct {
		name string
		body []byte
		mode int64
	}{{"Dockerfile", dockerfile, 0o644}, {"testctr", bin, 0o755}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body))}); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer bcancel()
	resp, err := c.ImageBuild(bctx, &ctxTar, client.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		return nil, "", fmt.Errorf("build test image: %w", err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := c.ImageInspect(context.Background(), tag); err != nil {
		return nil, "", fmt.Errorf("build test image: %v: %s", err, out)
	}
	return c, tag, nil
}

// buildTestctr compiles testctr statically and returns the binary.
func buildTestctr() ([]byte, error) {
	_, file, _, _ := runtime.Caller(0)
	dir, err := os.MkdirTemp("", "testctr-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "testctr")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, ".")
	cmd.Dir = filepath.Join(filepath.Dir(file), "testctr")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build testctr: %v: %s", err, b)
	}
	return os.ReadFile(out)
}

// Spec describes a test container.
type Spec struct {
	// Name is the container name; empty picks a unique one.
	Name   string
	Labels map[string]string
	Args   []string
	// Health adds a health check (testctr's marker file) polled this often.
	Health time.Duration
	// Stopped leaves the container created but not started.
	Stopped bool
	// Restart is the restart policy, e.g. "on-failure" with MaxRetries.
	Restart    container.RestartPolicyMode
	MaxRetries int
	// NetworkMode is the container's network: "bridge" for a namespace
	// of its own (a server other containers reach by IP, a gateway whose
	// namespace others join), "container:<name>" to share another's. Empty
	// is the host's: most test containers use no network, and a namespace
	// of their own costs Docker a re-exec of dockerd to create at every
	// start (about a third of a container start's CPU on the test
	// machine).
	NetworkMode string
	// Memory is the container's memory limit in bytes (docker run
	// --memory); 0 is none.
	Memory int64
}

// Run creates (and unless s.Stopped, starts) a container and returns its
// name. It is force-removed when t ends.
func Run(t testing.TB, s Spec) string {
	t.Helper()
	c, img := Client(t)
	ctx := context.Background()
	if s.Name == "" {
		s.Name = UniqueName("selfheal-test")
	}
	labels := map[string]string{TestLabel: "true", TestNameLabel: t.Name()}
	for k, v := range s.Labels {
		labels[k] = v
	}
	cfg := &container.Config{Image: img, Cmd: s.Args, Labels: labels}
	if s.Health > 0 {
		// The check itself answers at once; its timeout is generous so that
		// a loaded machine (the exec queued behind other containers) does
		// not fail a healthy container.
		cfg.Healthcheck = &container.HealthConfig{
			Test: []string{"CMD", "/testctr", "health"}, Interval: s.Health, Timeout: max(s.Health, 5*time.Second), Retries: 1,
		}
	}
	_, _ = c.ContainerRemove(ctx, s.Name, client.ContainerRemoveOptions{Force: true})
	if s.NetworkMode == "" {
		s.NetworkMode = "host"
	}
	host := &container.HostConfig{RestartPolicy: container.RestartPolicy{Name: s.Restart, MaximumRetryCount: s.MaxRetries},
		NetworkMode: container.NetworkMode(s.NetworkMode), Resources: container.Resources{Memory: s.Memory, MemorySwap: s.Memory}}
	created, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: s.Name})
	if err != nil {
		t.Fatalf("create container %s: %v", s.Name, err)
	}
	t.Cleanup(func() {
		_, _ = c.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	})
	if !s.Stopped {
		if _, err := c.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatalf("start container %s: %v", s.Name, err)
		}
	}
	return s.Name
}

// State returns the container's current state.
func State(t testing.TB, name string) *container.State {
	t.Helper()
	c, _ := Client(t)
	info, err := c.ContainerInspect(context.Background(), name, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return info.Container.State
}

// Kill stops a container the hard way, as a crash would.
func Kill(t testing.TB, name string) {
	t.Helper()
	c, _ := Client(t)
	if _, err := c.ContainerKill(context.Background(), name, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("kill %s: %v", name, err)
	}
	WaitFor(t, 10*time.Second, name+" stopped", func() bool { return !State(t, name).Running })
}

// TermIgnored is the line a container run with -ignore-term prints for
// each SIGTERM it ignores: a stop of it was asked for.
const TermIgnored = "testctr: SIGTERM ignored"

// Logs returns what the container has written so far.
func Logs(t testing.TB, name string) string {
	t.Helper()
	c, _ := Client(t)
	r, err := c.ContainerLogs(context.Background(), name, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs of %s: %v", name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("logs of %s: %v", name, err)
	}
	return string(b)
}

// WaitForStopAsked waits until a container run with -ignore-term has been
// sent SIGTERM: a stop (or a restart) of it is under way in Docker.
func WaitForStopAsked(t testing.TB, name string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "a stop of "+name+" asked for", func() bool { return strings.Contains(Logs(t, name), TermIgnored) })
}

// WaitFor polls cond until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, timeout, what, cond)
}

// OptIn returns an opt-in label of the caller's own, as Spec.Labels and
// as the value of targets.docker.require_label. Every selfheal on one
// Docker daemon acts on each container carrying the label it requires
// (hard_restart, the fast path, the exporter), so a test that runs one,
// alongside others, requires a label no other test uses.
func OptIn() (labels map[string]string, requireLabel string) {
	key := UniqueName("selfheal-test.enable")
	return map[string]string{key: "true"}, key + "=true"
}

// UniqueName returns prefix with a random suffix.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// BuildImage builds a tiny FROM scratch image holding content, tags it,
// and returns its ID. Building the same tag again with other content
// leaves the first image dangling. Both are removed when t ends.
func BuildImage(t testing.TB, tag, content string) string {
	t.Helper()
	return BuildLabelledImage(t, tag, content, nil)
}

// BuildLabelledImage is BuildImage with labels added to the image.
func BuildLabelledImage(t testing.TB, tag, content string, labels map[string]string) string {
	t.Helper()
	c, _ := Client(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{
		{"Dockerfile", "FROM scratch\nCOPY f /f\nLABEL " + TestLabel + "=true" + labelLines(labels)},
		{"f", content},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := c.ImageBuild(context.Background(), &buf, client.ImageBuildOptions{Tags: []string{tag}, Remove: true})
	if err != nil {
		t.Fatalf("build %s: %v", tag, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	info, err := c.ImageInspect(context.Background(), tag)
	if err != nil {
		t.Fatalf("build %s: %v", tag, err)
	}
	t.Cleanup(func() {
		_, _ = c.ImageRemove(context.Background(), info.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
	return info.ID
}

func labelLines(labels map[string]string) string {
	var b strings.Builder
	for k, v := range labels {
		fmt.Fprintf(&b, " %q=%q", k, v)
	}
	return b.String() + "\n"
}

// Exec runs cmd inside the running container and waits for it to exit 0.
func Exec(t testing.TB, name string, cmd ...string) {
	t.Helper()
	if code := ExecCode(t, name, cmd...); code != 0 {
		t.Fatalf("exec %v in %s: exit code %d", cmd, name, code)
	}
}

// ExecCode runs cmd inside the running container and returns its exit code.
func ExecCode(t testing.TB, name string, cmd ...string) int {
	t.Helper()
	c, _ := Client(t)
	ctx := context.Background()
	created, err := c.ExecCreate(ctx, name, client.ExecCreateOptions{Cmd: cmd})
	if err != nil {
		t.Fatalf("exec %v in %s: %v", cmd, name, err)
	}
	if _, err := c.ExecStart(ctx, created.ID, client.ExecStartOptions{Detach: true}); err != nil {
		t.Fatalf("exec %v in %s: %v", cmd, name, err)
	}
	var code int
	WaitFor(t, 10*time.Second, fmt.Sprintf("%v in %s", cmd, name), func() bool {
		info, err := c.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
		code = info.ExitCode
		return err == nil && !info.Running
	})
	return code
}

// IP returns the container's address on Docker's default bridge.
func IP(t testing.TB, name string) string {
	t.Helper()
	c, _ := Client(t)
	info, err := c.ContainerInspect(context.Background(), name, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	if n, ok := info.Container.NetworkSettings.Networks["bridge"]; ok && n.IPAddress.IsValid() {
		return n.IPAddress.String()
	}
	t.Fatalf("%s has no address on the default bridge", name)
	return ""
}
