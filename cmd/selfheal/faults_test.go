package main

// Faults of what selfheal acts through: a replica that cannot reach Docker
// must not swallow the alerts it receives, and a Docker Engine that is away
// for a while delays healing rather than refusing it.

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// faultConfig is a service-down ladder that acts fast, for the tests of
// one process (the plan and status tests build on it).
const faultConfig = `
engine: {poll_interval: 200ms}
targets:
  docker: {stop_timeout: 2s}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
    verify: {timeout: 20s, stable_for: 1s}
`

// TestReplicaWithoutDockerLeavesItsAlertsToAHealthyOne: two replicas on
// one database; the one every alert is delivered to cannot reach Docker.
// It reports not ready, claims none of the jobs, and the healthy replica
// heals every container within seconds.
func TestReplicaWithoutDockerLeavesItsAlertsToAHealthyOne(t *testing.T) {
	t.Parallel()
	label, requireLabel := dockertest.OptIn()
	var names []string
	for range 5 {
		names = append(names, dockertest.Run(t, dockertest.Spec{Labels: label, Stopped: true}))
	}
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, faultConfig)
	healthy, dead := freeAddr(t), freeAddr(t)
	daemon(t, env, config, healthy)
	background(t, append(env, "DOCKER_HOST=unix://"+filepath.Join(t.TempDir(), "no-docker.sock")), binary,
		"serve", "--config.file="+config, "--web.listen-address="+dead, "--log.level=debug")
	waitReady(t, "the replica without Docker (healthy)", "http://"+dead+"/-/healthy")
	resp, err := http.Get("http://" + dead + "/-/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), "Docker") {
		t.Fatalf("/-/ready of the replica without Docker: %d %s", resp.StatusCode, body)
	}

	for _, n := range names {
		post(t, env, dead, "ServiceDown", "service="+n)
	}
	conn := connect(t, dsn)
	dockertest.WaitFor(t, 30*time.Second, "every container healed", func() bool {
		for _, n := range names {
			if !running(t, n) {
				return false
			}
		}
		return true
	})
	dockertest.WaitFor(t, 10*time.Second, "every restart recorded", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE action_type = 'restart' AND status = 'succeeded'`) == 5
	})
	if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused'`); n != 0 {
		t.Fatalf("%d jobs refused", n)
	}
}

// dockerProxy forwards a unix socket to the Docker Engine's until cut:
// then it refuses every connection, as a stopped dockerd would.
type dockerProxy struct {
	path  string
	mu    sync.Mutex
	up    bool
	conns map[net.Conn]bool
	// restarts, if set, receives the time each restart request arrives.
	restarts chan time.Time
	// requests, if set, receives each request selfheal sent, once the
	// daemon has begun to answer it — a restart as soon as it is sent.
	requests chan proxied
}

// proxied is a request selfheal sent through the proxy: its first line,
// when it arrived, and when the daemon began to answer (zero for a restart,
// reported as it is sent).
type proxied struct {
	line         string
	at, answered time.Time
}

// exchange is one connection's request waiting for its answer.
type exchange struct {
	mu      sync.Mutex
	pending *proxied
}

// watch copies what selfheal sends to the daemon, noting restart requests.
type watch struct {
	r  io.Reader
	p  *dockerProxy
	ex *exchange
}

func (w watch) Read(b []byte) (int, error) {
	n, err := w.r.Read(b)
	line, _, _ := bytes.Cut(b[:n], []byte("\r\n"))
	method, _, _ := bytes.Cut(line, []byte(" "))
	switch string(method) {
	case "GET", "HEAD", "POST":
	default:
		return n, err // the rest of a request, or a body
	}
	req := &proxied{line: string(line), at: time.Now()}
	if string(method) == "POST" && bytes.Contains(line, []byte("/restart")) {
		if w.p.restarts != nil {
			select {
			case w.p.restarts <- req.at:
			default:
			}
		}
		w.p.report(*req) // as it is sent: its answer comes once the restart is done
		return n, err
	}
	w.ex.mu.Lock()
	w.ex.pending = req
	w.ex.mu.Unlock()
	return n, err
}

// answers copies what the daemon answers, noting when each answer begins.
type answers struct {
	r  io.Reader
	p  *dockerProxy
	ex *exchange
}

func (a answers) Read(b []byte) (int, error) {
	n, err := a.r.Read(b)
	if n > 0 {
		a.ex.mu.Lock()
		req := a.ex.pending
		a.ex.pending = nil
		a.ex.mu.Unlock()
		if req != nil {
			req.answered = time.Now()
			a.p.report(*req)
		}
	}
	return n, err
}

func (p *dockerProxy) report(r proxied) {
	if p.requests == nil {
		return
	}
	select {
	case p.requests <- r:
	default:
	}
}

func newDockerProxy(t testing.TB) *dockerProxy {
	t.Helper()
	p := &dockerProxy{path: filepath.Join(t.TempDir(), "docker.sock"), up: true, conns: map[net.Conn]bool{}}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			up := p.up
			if up {
				p.conns[c] = true
			}
			p.mu.Unlock()
			if !up {
				c.Close()
				continue
			}
			go func() {
				defer func() {
					p.mu.Lock()
					delete(p.conns, c)
					p.mu.Unlock()
					c.Close()
				}()
				d, err := net.Dial("unix", "/var/run/docker.sock")
				if err != nil {
					return
				}
				defer d.Close()
				ex := &exchange{}
				go func() { _, _ = io.Copy(d, watch{c, p, ex}) }()
				_, _ = io.Copy(c, answers{d, p, ex})
			}()
		}
	}()
	return p
}

// set lets connections through, or cuts every open one and refuses new
// ones.
func (p *dockerProxy) set(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for c := range p.conns {
			c.Close()
		}
	}
}

// TestDockerAwayDelaysHealing: the Docker Engine does not answer for ten
// seconds, and an alert arrives meanwhile. Nothing is refused; once Docker
// answers again the container is healed, with no second delivery.
func TestDockerAwayDelaysHealing(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true})
	proxy := newDockerProxy(t)
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok", "DOCKER_HOST=unix://" + proxy.path}
	addr := freeAddr(t)
	daemon(t, env, writeConfig(t, requireLabel, faultConfig), addr)

	proxy.set(false)
	post(t, env, addr, "ServiceDown", "service="+name)
	time.Sleep(10 * time.Second)
	if running(t, name) {
		t.Fatal("healed while Docker was away?")
	}
	proxy.set(true)
	back := time.Now()
	dockertest.WaitFor(t, 30*time.Second, name+" healed once Docker is back", func() bool { return running(t, name) })
	t.Logf("healed %s after Docker came back", time.Since(back).Round(100*time.Millisecond))
	conn := connect(t, dsn)
	if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused'`); n != 0 {
		t.Fatalf("%d jobs refused while Docker was away", n)
	}
	if n := queryInt(t, conn, `SELECT deliveries FROM alert_occurrences`); n != 1 {
		t.Fatalf("%d deliveries: healing waited for a redelivery", n)
	}
}

// TestShutdownBound: SIGTERM while a restart waits out a container that
// ignores SIGTERM. selfheal exits once --shutdown.timeout has passed, not
// when the action would have ended, giving up the action's lease; the next
// start records the action as interrupted at once and goes on.
func TestShutdownBound(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Args: []string{"-ignore-term"}})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, strings.Replace(faultConfig, "stop_timeout: 2s", "stop_timeout: 20s", 1))
	addr := freeAddr(t)
	first := daemon(t, env, config, addr, "--shutdown.timeout=2s")
	post(t, env, addr, "ServiceDown", "service="+name)
	conn := connect(t, dsn)
	dockertest.WaitFor(t, 10*time.Second, "the restart under way", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 1
	})
	dockertest.WaitForStopAsked(t, name, 10*time.Second) // the restart itself, past the evidence
	stopped := time.Now()
	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { _, err := first.Process.Wait(); exited <- err }()
	select {
	case <-exited:
		t.Logf("exited %s after SIGTERM", time.Since(stopped).Round(100*time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("selfheal did not exit within its shutdown timeout")
	}
	daemon(t, env, config, addr)
	dockertest.WaitFor(t, 10*time.Second, "the action recorded as interrupted", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'interrupted'`) == 1
	})
	dockertest.WaitFor(t, 60*time.Second, name+" running", func() bool { return running(t, name) })
}
