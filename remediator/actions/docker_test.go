package actions

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/containers"
)

// fleet returns a Docker adapter whose opt-in label is unique to the test,
// so it never touches other tests' containers.
func fleet(t *testing.T) (*containers.Client, map[string]string) {
	t.Helper()
	dockertest.Client(t)
	key := dockertest.UniqueName("selfheal.actions")
	c, err := containers.New(containers.Options{Host: "unix:///var/run/docker.sock", RequireLabel: key + "=true", StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, map[string]string{key: "true"}
}

var quickVerify = action.Verify{Timeout: 10 * time.Second, StableFor: 300 * time.Millisecond}

func startedAt(t *testing.T, name string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, dockertest.State(t, name).StartedAt)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestHardRestartInOrderAndVerified(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	a := dockertest.Run(t, dockertest.Spec{Labels: label})
	b := dockertest.Run(t, dockertest.Spec{Labels: label, Stopped: true})
	d := dockertest.Run(t, dockertest.Spec{Labels: label})
	hr := HardRestart{Fleet: c}
	before := time.Now()
	req := action.Request{Target: "application", Verify: quickVerify,
		Params: &HardRestartParams{Services: []string{d, a, b}, Concurrency: 1}}
	if err := hr.Permit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	res, err := hr.Execute(context.Background(), req)
	if err != nil {
		t.Fatalf("%v (%v)", err, res.Details)
	}
	sd, sa, sb := startedAt(t, d), startedAt(t, a), startedAt(t, b)
	if !before.Before(sd) || !sd.Before(sa) || !sa.Before(sb) {
		t.Fatalf("restart order %s, %s, %s; want %s, %s, %s in that order", sd, sa, sb, d, a, b)
	}

	// Without a list: every opted-in container, by name. One that dies
	// after starting fails the action; the others are still restarted.
	dockertest.Run(t, dockertest.Spec{Labels: label, Args: []string{"-exit-after=100ms"}, Stopped: true})
	before = time.Now()
	req.Params = &HardRestartParams{Concurrency: 2}
	// Stable for far longer than the dying one lives: with 300 ms, a
	// loaded machine started its process late enough that it was still up
	// when the verification looked again, and the action succeeded.
	req.Verify.StableFor = 2 * time.Second
	res, err = hr.Execute(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "1 of 4 services failed") {
		t.Fatalf("want one failure of four: %v", err)
	}
	for _, n := range []string{a, b, d} {
		if !startedAt(t, n).After(before) {
			t.Errorf("%s was not restarted", n)
		}
	}
	if got := len(res.Details["services"].([]any)); got != 4 {
		t.Errorf("details list %d services, want 4", got)
	}
}

func TestHardRestartRefusesUnlabelled(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	a := dockertest.Run(t, dockertest.Spec{Labels: label})
	plain := dockertest.Run(t, dockertest.Spec{})
	before := dockertest.State(t, a).StartedAt
	err := HardRestart{Fleet: c}.Permit(context.Background(), action.Request{
		Params: &HardRestartParams{Services: []string{a, plain}, Concurrency: 1}})
	if !errors.Is(err, containers.ErrNotPermitted) || !strings.Contains(err.Error(), plain) {
		t.Fatalf("Permit = %v", err)
	}
	if dockertest.State(t, a).StartedAt != before {
		t.Fatal("a refused hard restart touched a service")
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	stoppedOptedIn := dockertest.Run(t, dockertest.Spec{Labels: label, Stopped: true})
	runningOptedIn := dockertest.Run(t, dockertest.Spec{Labels: label})
	stoppedOther := dockertest.Run(t, dockertest.Spec{Stopped: true})
	// The default spares containers stopped less than a day ago.
	if _, err := (DockerPrune{Fleet: c}).Execute(context.Background(), action.Request{Params: &DockerPruneParams{
		StoppedFor: action.Duration(24 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	api, _ := dockertest.Client(t)
	if _, err := api.ContainerInspect(context.Background(), stoppedOptedIn, client.ContainerInspectOptions{}); err != nil {
		t.Fatalf("a container stopped a moment ago was pruned: %v", err)
	}
	tag := dockertest.UniqueName("selfheal-prune-test") + ":v"
	dangling := dockertest.BuildLabelledImage(t, tag, "first", label)
	tagged := dockertest.BuildLabelledImage(t, tag, "second", label) // takes the tag: the first is dangling now
	otherTag := dockertest.UniqueName("selfheal-prune-other") + ":v"
	danglingOther := dockertest.BuildImage(t, otherTag, "first")
	dockertest.BuildImage(t, otherTag, "second")

	res, err := DockerPrune{Fleet: c}.Execute(context.Background(), action.Request{Params: &DockerPruneParams{StoppedFor: 0}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := api.ContainerInspect(ctx, stoppedOptedIn, client.ContainerInspectOptions{}); err == nil {
		t.Error("the stopped opted-in container was not removed")
	}
	for _, n := range []string{runningOptedIn, stoppedOther} {
		if _, err := api.ContainerInspect(ctx, n, client.ContainerInspectOptions{}); err != nil {
			t.Errorf("%s was removed: %v", n, err)
		}
	}
	if _, err := api.ImageInspect(ctx, dangling); err == nil {
		t.Error("the dangling image was not removed")
	}
	if _, err := api.ImageInspect(ctx, tagged); err != nil {
		t.Errorf("the tagged image was removed: %v", err)
	}
	if _, err := api.ImageInspect(ctx, danglingOther); err != nil {
		t.Errorf("a dangling image without the opt-in label was removed: %v", err)
	}
	removed, _ := res.Details["containers_removed"].([]string)
	if len(removed) != 1 || res.Details["images_removed"].(int) < 1 {
		t.Errorf("details %v", res.Details)
	}
}

func TestOptedInListsLabelledContainersSorted(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	names := []string{dockertest.Run(t, dockertest.Spec{Labels: label}), dockertest.Run(t, dockertest.Spec{Labels: label, Stopped: true})}
	dockertest.Run(t, dockertest.Spec{})
	got, err := c.OptedIn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("OptedIn = %v, want %v", got, names)
	}
}
