package containers

import (
	"reflect"
	"testing"

	"github.com/moby/moby/api/types/container"
)

func summary(name, id, network string, labels map[string]string) container.Summary {
	s := container.Summary{ID: id, Names: []string{"/" + name}, Labels: labels}
	s.HostConfig.NetworkMode = network
	return s
}

func compose(project, service, dependsOn string) map[string]string {
	l := map[string]string{LabelProject: project, LabelService: service, LabelNumber: "1"}
	if dependsOn != "" {
		l[LabelDependsOn] = dependsOn
	}
	return l
}

func TestDependents(t *testing.T) {
	t.Parallel()
	g := NewGraph([]container.Summary{
		summary("gateway", "aaaaaaaaaaaaaaaa01", "bridge", nil),
		summary("proxy", "bbbbbbbbbbbbbbbb02", "container:aaaaaaaaaaaaaaaa01", nil), // by ID, as Docker stores it
		summary("sidecar", "cccccccccccccccc03", "container:proxy", nil),            // shares the proxy's, in turn
		summary("unrelated", "dddddddddddddddd04", "bridge", nil),
		summary("app-db-1", "eeeeeeeeeeeeeeee05", "app_default", compose("app", "db", "")),
		summary("app-api-1", "ffffffffffffffff06", "app_default", compose("app", "api", "db:service_healthy:true")),
		summary("app-web-1", "0000000000000007", "app_default", compose("app", "web", "api:service_started:false,db:service_started:true")),
		summary("app-worker-1", "0000000000000008", "app_default", compose("app", "worker", "db:service_started:false")),
	})
	for _, tc := range []struct {
		target string
		want   []string
	}{
		{"gateway", []string{"proxy", "sidecar"}},
		{"proxy", []string{"sidecar"}},
		{"unrelated", nil},
		// web restarts with db (restart: true) after api; worker's
		// depends_on says restart: false.
		{"app-db-1", []string{"app-api-1", "app-web-1"}},
		{"app-api-1", nil},
	} {
		o, err := g.Dependents(tc.target)
		if err != nil || !reflect.DeepEqual(o.Names, tc.want) || o.Cycle != nil {
			t.Errorf("Dependents(%s) = %v cycle %v, %v; want %v", tc.target, o.Names, o.Cycle, err, tc.want)
		}
	}
	if _, err := g.Dependents("missing"); err == nil {
		t.Error("a missing target has dependents")
	}
	project, o, err := g.Project("app-web-1")
	if err != nil || project != "app" || !reflect.DeepEqual(o.Names, []string{"app-db-1", "app-api-1", "app-web-1", "app-worker-1"}) {
		t.Errorf("Project = %s %v, %v", project, o.Names, err)
	}
	if _, _, err := g.Project("gateway"); err == nil {
		t.Error("a container outside compose has a project")
	}
}

func TestCycle(t *testing.T) {
	t.Parallel()
	g := NewGraph([]container.Summary{
		summary("c-a-1", "01", "", compose("c", "a", "b:service_started:true")),
		summary("c-b-1", "02", "", compose("c", "b", "a:service_started:true,t:service_started:true")),
		summary("c-t-1", "03", "", compose("c", "t", "")),
		summary("c-z-1", "04", "", compose("c", "z", "t:service_started:true")),
	})
	_, o, err := g.Project("c-z-1")
	if err != nil || !reflect.DeepEqual(o.Names, []string{"c-t-1", "c-z-1"}) || !reflect.DeepEqual(o.Cycle, []string{"c-a-1", "c-b-1"}) {
		t.Errorf("Project = %v cycle %v, %v", o.Names, o.Cycle, err)
	}
	// t's dependents: z, and b, which depends on a, which depends on b.
	o, err = g.Dependents("c-t-1")
	if err != nil || !reflect.DeepEqual(o.Names, []string{"c-z-1"}) || !reflect.DeepEqual(o.Cycle, []string{"c-a-1", "c-b-1"}) {
		t.Errorf("Dependents = %v cycle %v, %v", o.Names, o.Cycle, err)
	}
	// The target itself is never among its dependents, cycle or not.
	o, err = g.Dependents("c-a-1")
	if err != nil || !reflect.DeepEqual(o.Names, []string{"c-b-1"}) || o.Cycle != nil {
		t.Errorf("Dependents(c-a-1) = %v cycle %v, %v", o.Names, o.Cycle, err)
	}
}

// Containers that do not depend on each other come in a fixed order:
// by name, and a service's replicas by their number.
func TestOrderIsDeterministic(t *testing.T) {
	t.Parallel()
	list := []container.Summary{summary("gw", "01", "", nil)}
	for _, n := range []string{"d", "b", "c", "a"} {
		list = append(list, summary(n, "x"+n, "container:gw", nil))
	}
	r2 := compose("p", "web", "")
	r2[LabelNumber] = "2"
	r10 := compose("p", "web", "")
	r10[LabelNumber] = "10"
	list = append(list, summary("p-web-10", "y10", "", r10), summary("p-web-2", "y2", "", r2))
	g := NewGraph(list)
	for range 20 {
		if o, _ := g.Dependents("gw"); !reflect.DeepEqual(o.Names, []string{"a", "b", "c", "d"}) {
			t.Fatalf("dependents in order %v", o.Names)
		}
		if _, o, _ := g.Project("p-web-2"); !reflect.DeepEqual(o.Names, []string{"p-web-2", "p-web-10"}) {
			t.Fatalf("replicas in order %v", o.Names)
		}
	}
}
