// Command socket-proxy stands in for wollomatic/socket-proxy in
// `make test-deploy`, where no image registry is reachable. It reads the
// compose file's flags with the same meaning — a request passes only when
// its method has an allow list (-allowGET, -allowPOST, …) whose regular
// expression, anchored at both ends, matches the whole path, and it comes
// from an address of -allowfrom (a host name, resolved per request, or
// CIDRs) — and forwards it to the Docker socket. Anything else gets 403.
// It is a test fixture: the stack as shipped runs the real proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"
)

type proxy struct {
	allow     map[string]*regexp.Regexp // method → anchored path pattern
	allowFrom []string
	log       *slog.Logger
	upstream  *httputil.ReverseProxy
}

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("socket-proxy", flag.ContinueOnError)
	level := fs.String("loglevel", "info", "debug, info, warn or error")
	listenIP := fs.String("listenip", "127.0.0.1", "address to listen on")
	port := fs.Int("proxyport", 2375, "port to listen on")
	allowFrom := fs.String("allowfrom", "127.0.0.1/32", "comma-separated host names or CIDRs allowed to connect")
	socket := fs.String("socketpath", "/var/run/docker.sock", "the Docker socket")
	watchdog := fs.Int("watchdoginterval", 0, "seconds between checks that the socket answers (0: none)")
	stopOnWatchdog := fs.Bool("stoponwatchdog", false, "exit when the watchdog finds the socket unanswering")
	grace := fs.Int("shutdowngracetime", 10, "seconds to finish requests on SIGTERM")
	p := &proxy{allow: map[string]*regexp.Regexp{}}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "OPTIONS"} {
		fs.Func("allow"+m, "regular expression of the "+m+" paths to let through", func(v string) error {
			re, err := regexp.Compile("^(?:" + v + ")$")
			if err != nil {
				return err
			}
			p.allow[m] = re
			return nil
		})
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "-loglevel:", err)
		return 2
	}
	p.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	p.allowFrom = strings.Split(*allowFrom, ",")
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", *socket)
	}
	p.upstream = &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker" },
		Transport:     &http.Transport{DialContext: dial},
		FlushInterval: -1, // the events stream
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: net.JoinHostPort(*listenIP, fmt.Sprint(*port)), Handler: p, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	if *watchdog > 0 {
		go p.watch(ctx, dial, time.Duration(*watchdog)*time.Second, *stopOnWatchdog, stop)
	}
	p.log.Info("socket-proxy stand-in listening", "addr", srv.Addr, "allowfrom", *allowFrom)
	select {
	case err := <-errc:
		p.log.Error("listen", "err", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(*grace)*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		p.log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.fromAllowed(r.RemoteAddr) {
		p.log.Warn("refused: address not allowed", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	re, ok := p.allow[r.Method]
	if !ok || !re.MatchString(r.URL.Path) {
		p.log.Warn("refused: not on the allow list", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	p.log.Debug("allowed", "method", r.Method, "path", r.URL.Path)
	p.upstream.ServeHTTP(w, r)
}

// fromAllowed resolves the allowed host names on each request: a
// container's address changes when it is recreated.
func (p *proxy) fromAllowed(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, a := range p.allowFrom {
		a = strings.TrimSpace(a)
		if pfx, err := netip.ParsePrefix(a); err == nil {
			if pfx.Contains(ip) {
				return true
			}
			continue
		}
		addrs, err := net.LookupHost(a)
		if err != nil {
			p.log.Debug("cannot resolve allowfrom", "name", a, "err", err)
			continue
		}
		for _, s := range addrs {
			if x, err := netip.ParseAddr(s); err == nil && x.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// watch pings the socket; when it stops answering the proxy is useless, and
// with -stoponwatchdog it exits so that Docker restarts it.
func (p *proxy) watch(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), every time.Duration, exit bool, stop func()) {
	c := &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 5 * time.Second}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		resp, err := c.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			continue
		}
		p.log.Error("watchdog: the Docker socket does not answer", "err", err)
		if exit {
			stop()
			return
		}
	}
}
