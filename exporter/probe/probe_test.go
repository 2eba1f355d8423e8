package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/exporter/exportertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestProbes(t *testing.T) {
	t.Parallel()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/minio/health/live":
		case "/redirect":
			http.Redirect(w, r, "/minio/health/live", http.StatusFound)
		case "/slow":
			time.Sleep(2 * time.Second)
		default:
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer healthy.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Reserved: no other test or connection takes it while this one runs.
	closedAddr := testenv.FreeAddr(t)
	dsn := pgtest.DSN(t)

	for _, tc := range []struct {
		p  Probe
		ok bool
	}{
		{Probe{Name: "minio", Type: HTTP, Target: healthy.URL + "/minio/health/live"}, true},
		{Probe{Name: "redirected", Type: HTTP, Target: healthy.URL + "/redirect"}, true},
		{Probe{Name: "unhealthy", Type: HTTP, Target: healthy.URL + "/other"}, false},
		{Probe{Name: "too-slow", Type: HTTP, Target: healthy.URL + "/slow", Timeout: 200 * time.Millisecond}, false},
		{Probe{Name: "port", Type: TCP, Target: l.Addr().String()}, true},
		{Probe{Name: "closed-port", Type: TCP, Target: closedAddr}, false},
		{Probe{Name: "db", Type: Postgres, Target: dsn}, true},
		{Probe{Name: "db-gone", Type: Postgres, Target: "postgres://nobody@" + closedAddr + "/x?sslmode=disable&connect_timeout=1"}, false},
	} {
		t.Run(tc.p.Name, func(t *testing.T) {
			c, err := New([]Probe{tc.p})
			if err != nil {
				t.Fatal(err)
			}
			out := exportertest.Exposition(t, c)
			want := `selfheal_probe_success{probe="` + tc.p.Name + `",type="` + tc.p.Type + `"} ` + map[bool]string{true: "1", false: "0"}[tc.ok]
			if !strings.Contains(out, want+"\n") {
				t.Fatalf("want %s in\n%s (check: %v)", want, out, c.Check(context.Background(), tc.p))
			}
			if !strings.Contains(out, `selfheal_probe_duration_seconds{probe="`+tc.p.Name+`"`) {
				t.Error("no duration")
			}
		})
	}
}

func TestProbeTimeoutBoundsTheScrape(t *testing.T) {
	t.Parallel()
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(3 * time.Second) }))
	defer slow.Close()
	var probes []Probe
	for _, n := range []string{"a", "b", "c"} {
		probes = append(probes, Probe{Name: n, Type: HTTP, Target: slow.URL, Timeout: 300 * time.Millisecond})
	}
	c, _ := New(probes)
	start := time.Now()
	exportertest.Exposition(t, c)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("three 300ms probes took %s: they must run concurrently and time out", took)
	}
}

func TestUnknownType(t *testing.T) {
	t.Parallel()
	if _, err := New([]Probe{{Name: "x", Type: "icmp"}}); err == nil || err.Error() != `probe "x": type: "icmp" is not one of http, postgres, tcp; target: must be set` {
		t.Fatalf("got %v", err)
	}
}
