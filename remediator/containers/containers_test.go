package containers_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/containers"
)

// optIn is this test process's own opt-in label (dockertest.OptIn).
var optIn, requireLabel = dockertest.OptIn()

func newClient(t *testing.T, allow ...string) *containers.Client {
	t.Helper()
	dockertest.Client(t) // skip or fail early without Docker
	c, err := containers.New(containers.Options{
		Host: "unix:///var/run/docker.sock", RequireLabel: requireLabel,
		Allow: allow, StopTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var quick = containers.Verification{Timeout: 10 * time.Second, StableFor: 500 * time.Millisecond}

func TestPermit(t *testing.T) {
	t.Parallel()
	labelled := dockertest.Run(t, dockertest.Spec{Labels: optIn})
	wrongValue := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{strings.TrimSuffix(requireLabel, "=true"): "false"}})
	plain := dockertest.Run(t, dockertest.Spec{})
	listed := dockertest.Run(t, dockertest.Spec{})
	c := newClient(t, listed)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		want string
	}{
		{labelled, ""},
		{listed, ""},
		{plain, "lacks the opt-in label " + requireLabel},
		{wrongValue, "lacks the opt-in label " + requireLabel},
		{"no-such-container-xyz", `no container named "no-such-container-xyz"`},
	} {
		err := c.Permit(ctx, tc.name)
		if tc.want == "" {
			if err != nil {
				t.Errorf("Permit(%s) = %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, containers.ErrNotPermitted) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Permit(%s) = %v, want ErrNotPermitted mentioning %q", tc.name, err, tc.want)
		}
	}
}

// A decision's checks share one look at the container (action.WithLook):
// what one check read, the next is told, even after the container changed;
// the action, outside the look, reads it afresh.
func TestDecisionChecksShareOneLook(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn})
	c := newClient(t)
	decision := action.WithLook(context.Background())
	if err := c.Permit(decision, name); err != nil {
		t.Fatal(err)
	}
	dockertest.Kill(t, name)
	if up, _, err := c.Running(decision, name); err != nil || !up {
		t.Errorf("in the decision's look: running %v, %v; want the view its permit read (running)", up, err)
	}
	if up, _, err := c.Running(context.Background(), name); err != nil || up {
		t.Errorf("outside it: running %v, %v; want what the container is now (stopped)", up, err)
	}
}

func TestRestartRefusesUnlabelled(t *testing.T) {
	t.Parallel()
	plain := dockertest.Run(t, dockertest.Spec{Stopped: true})
	c := newClient(t)
	if _, err := c.Restart(context.Background(), plain); !errors.Is(err, containers.ErrNotPermitted) {
		t.Fatalf("Restart = %v", err)
	}
	if _, err := c.StopStart(context.Background(), plain, 0); !errors.Is(err, containers.ErrNotPermitted) {
		t.Fatalf("StopStart = %v", err)
	}
	if st := dockertest.State(t, plain); st.Running || st.StartedAt != "0001-01-01T00:00:00Z" {
		t.Fatalf("unlabelled container was touched: %+v", st)
	}
}

func TestRestartAndVerify(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true})
	c := newClient(t)
	ctx := context.Background()
	since, err := c.Restart(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(ctx, name, since, quick); err != nil {
		t.Fatal(err)
	}
	if !dockertest.State(t, name).Running {
		t.Fatal("not running")
	}
}

func TestStopStart(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn})
	before := dockertest.State(t, name).StartedAt
	c := newClient(t)
	ctx := context.Background()
	since, err := c.StopStart(ctx, name, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(ctx, name, since, quick); err != nil {
		t.Fatal(err)
	}
	if after := dockertest.State(t, name).StartedAt; after == before {
		t.Fatal("container was not restarted")
	}
}

// A run that dies fails the verification when it dies — right after its
// start, or inside stable_for — not when the timeout or the window ends,
// and the error gives its exit code.
func TestVerifyFailsWhenTheRunDies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, exitAfter, exitCode, want string
		v                               containers.Verification
		within                          time.Duration // well before the timeout or the window ends
	}{
		{"right after its start", "100ms", "3", "code 3", containers.Verification{Timeout: 20 * time.Second, StableFor: time.Second}, 5 * time.Second},
		{"inside stable_for", "1s", "4", "did not stay up for 30s", containers.Verification{Timeout: 20 * time.Second, StableFor: 30 * time.Second}, 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true, Args: []string{"-exit-after=" + tc.exitAfter, "-exit-code=" + tc.exitCode}})
			c := newClient(t)
			ctx := context.Background()
			since, err := c.Restart(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = c.Verify(ctx, name, since, tc.v)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "code "+tc.exitCode) {
				t.Fatalf("Verify = %v; want its death (%q), with exit code %s", err, tc.want, tc.exitCode)
			}
			if took := time.Since(start); took >= tc.within {
				t.Errorf("took %s: the timeout or the window was waited out, though the run died at once", took)
			}
		})
	}
}

func TestVerifyWaitsForHealth(t *testing.T) {
	t.Parallel()
	healthy := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true, Args: []string{"-healthy-after=1s"}, Health: 200 * time.Millisecond})
	never := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true, Args: []string{"-healthy-after=-1s"}, Health: 200 * time.Millisecond})
	c := newClient(t)
	ctx := context.Background()
	since, err := c.Restart(ctx, healthy)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(ctx, healthy, since, quick); err != nil {
		t.Fatalf("healthy after 1s: %v", err)
	}
	if h := dockertest.State(t, healthy).Health; h == nil || h.Status != "healthy" {
		t.Fatalf("health %+v", h)
	}
	since, err = c.Restart(ctx, never)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Verify(ctx, never, since, containers.Verification{Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "not up after 2s: health") {
		t.Fatalf("never healthy: %v", err)
	}
}
