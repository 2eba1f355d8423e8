package actions

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/containers"
)

// The classic case: a proxy in a VPN gateway's network namespace. The
// gateway crashes; restarting it alone leaves the proxy running in a dead
// namespace. With dependents: restart the proxy follows, and reaches the
// network again.
func TestGatewayAndProxy(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	server := dockertest.Run(t, dockertest.Spec{Args: []string{"-http=:8080"}, NetworkMode: "bridge"})
	url := "http://" + dockertest.IP(t, server) + ":8080/"
	gateway := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "bridge"})
	proxy := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "container:" + gateway})
	dockertest.WaitFor(t, 10*time.Second, "the proxy reaches the server", func() bool {
		return dockertest.ExecCode(t, proxy, "/testctr", "fetch", url) == 0
	})

	dockertest.Kill(t, gateway)
	if !dockertest.State(t, proxy).Running {
		t.Fatal("the proxy stopped with its gateway; the case this test is about does not arise")
	}
	if dockertest.ExecCode(t, proxy, "/testctr", "fetch", url) == 0 {
		t.Fatal("the proxy reaches the network with its gateway dead")
	}

	req := action.Request{Target: gateway, Verify: quickVerify, Params: &RestartParams{Dependents: DependentsRestart}}
	touches, err := Restart{Containers: c}.Touches(context.Background(), req)
	if err != nil || !slices.Equal(touches, []string{gateway, proxy}) {
		t.Fatalf("touches = %v, %v", touches, err)
	}
	res, err := Restart{Containers: c}.Execute(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Touched) != 1 || res.Touched[0].Target != proxy || res.Touched[0].Err != nil || res.Touched[0].Skipped != "" {
		t.Fatalf("touched = %+v", res.Touched)
	}
	if !startedAt(t, proxy).After(startedAt(t, gateway)) {
		t.Errorf("the proxy (started %s) did not restart after the gateway (%s)", startedAt(t, proxy), startedAt(t, gateway))
	}
	if code := dockertest.ExecCode(t, proxy, "/testctr", "fetch", url); code != 0 {
		t.Errorf("the proxy does not reach the network through the new namespace (exit %d)", code)
	}

	// Without the option, only the target restarts.
	before := startedAt(t, proxy)
	if _, err := (Restart{Containers: c}).Execute(context.Background(), action.Request{Target: gateway, Verify: quickVerify}); err != nil {
		t.Fatal(err)
	}
	if !startedAt(t, proxy).Equal(before) {
		t.Error("a dependent restarted though the step does not ask for it")
	}
}

// A dependent that is not opted in is reported, never touched; nor is
// what depends on it in turn.
func TestDependentNotOptedIn(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	gateway := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "bridge"})
	proxy := dockertest.Run(t, dockertest.Spec{NetworkMode: "container:" + gateway})
	sidecar := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "container:" + proxy})
	before := startedAt(t, proxy)
	res, err := StopStart{Containers: c}.Execute(context.Background(), action.Request{Target: gateway, Verify: quickVerify,
		Params: &StopStartParams{Dependents: DependentsRestart}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{proxy: "not opted in", sidecar: "depends on " + proxy + ", which was not restarted"}
	if len(res.Touched) != 2 {
		t.Fatalf("touched = %+v", res.Touched)
	}
	for _, tc := range res.Touched {
		if tc.Skipped != want[tc.Target] {
			t.Errorf("%s: skipped %q, want %q", tc.Target, tc.Skipped, want[tc.Target])
		}
	}
	if !startedAt(t, proxy).Equal(before) {
		t.Error("a container that is not opted in was restarted")
	}
}

// removing deletes a container when the action first restarts another:
// a dependent removed while the action runs.
type removing struct {
	*containers.Client
	when, remove string
	t            *testing.T
}

func (r removing) Restart(ctx context.Context, name string) (time.Time, error) {
	if name == r.when {
		c, _ := dockertest.Client(r.t)
		if _, err := c.ContainerRemove(ctx, r.remove, client.ContainerRemoveOptions{Force: true}); err != nil {
			r.t.Error(err)
		}
	}
	return r.Client.Restart(ctx, name)
}

func TestDependentRemovedMidAction(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	gateway := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "bridge"})
	first := dockertest.Run(t, dockertest.Spec{Name: dockertest.UniqueName("a-first"), Labels: label, NetworkMode: "container:" + gateway})
	second := dockertest.Run(t, dockertest.Spec{Name: dockertest.UniqueName("b-second"), Labels: label, NetworkMode: "container:" + gateway})
	// A verification timeout far longer than the restart takes, even on a
	// loaded machine: waiting on the removed container would show.
	verify := quickVerify
	verify.Timeout = time.Minute
	begun := time.Now()
	touched, err := restartDependents(context.Background(), removing{Client: c, when: first, remove: second, t: t}, gateway, verify)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begun); took >= verify.Timeout {
		t.Errorf("took %s: it waited for the removed container's verification", took)
	}
	if len(touched) != 2 || touched[0].Target != first || touched[0].Err != nil ||
		touched[1].Target != second || !strings.HasPrefix(touched[1].Skipped, "gone") {
		t.Fatalf("touched = %+v", touched)
	}
}

// composeLabels labels a container as docker compose does.
func composeLabels(label map[string]string, name, service, dependsOn string) map[string]string {
	l := map[string]string{containers.LabelProject: name, containers.LabelService: service, containers.LabelNumber: "1"}
	if dependsOn != "" {
		l[containers.LabelDependsOn] = dependsOn
	}
	for k, v := range label {
		l[k] = v
	}
	return l
}

func TestRestartProject(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	p := dockertest.UniqueName("proj")
	svc := func(service, dependsOn string, optedIn bool) string {
		l := label
		if !optedIn {
			l = nil
		}
		return dockertest.Run(t, dockertest.Spec{Name: p + "-" + service + "-1", Labels: composeLabels(l, p, service, dependsOn)})
	}
	db := svc("db", "", true)
	api := svc("api", "db:service_started:true", true)
	web := svc("web", "api:service_started:false", true)
	manual := svc("manual", "db:service_started:false", false)
	manualStarted := startedAt(t, manual)

	exec := RestartProject{Stack: c}
	req := action.Request{Target: api, Verify: quickVerify}
	touches, err := exec.Touches(context.Background(), req)
	if err != nil || !slices.Equal(touches, []string{db, api, web}) {
		t.Fatalf("touches = %v, %v", touches, err)
	}
	if err := exec.Permit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	res, err := exec.Execute(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !startedAt(t, db).Before(startedAt(t, api)) || !startedAt(t, api).Before(startedAt(t, web)) {
		t.Errorf("not started in dependency order: db %s, api %s, web %s", startedAt(t, db), startedAt(t, api), startedAt(t, web))
	}
	if !startedAt(t, manual).Equal(manualStarted) {
		t.Error("a service that is not opted in was restarted")
	}
	got := map[string]string{}
	for _, tc := range res.Touched {
		got[tc.Target] = tc.Skipped
		if tc.Err != nil {
			t.Errorf("%s: %v", tc.Target, tc.Err)
		}
	}
	if len(res.Touched) != 3 || got[manual] != "not opted in" || got[db] != "" || got[web] != "" {
		t.Errorf("touched = %+v", res.Touched)
	}
}

func TestRestartProjectCycle(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	p := dockertest.UniqueName("cycle")
	a := dockertest.Run(t, dockertest.Spec{Name: p + "-a-1", Labels: composeLabels(label, p, "a", "b:service_started:true")})
	b := dockertest.Run(t, dockertest.Spec{Name: p + "-b-1", Labels: composeLabels(label, p, "b", "a:service_started:true")})
	before := startedAt(t, a)
	req := action.Request{Target: a, Verify: quickVerify}
	var refusal *action.Refusal
	if err := (RestartProject{Stack: c}).Permit(context.Background(), req); !errors.As(err, &refusal) ||
		!strings.Contains(err.Error(), "dependency cycle among "+a+", "+b) {
		t.Fatalf("permit: %v", err)
	}
	if _, err := (RestartProject{Stack: c}).Execute(context.Background(), req); err == nil {
		t.Fatal("a project with a cycle was restarted")
	}
	if !startedAt(t, a).Equal(before) || !dockertest.State(t, b).Running {
		t.Error("something was touched")
	}
}
