// Command testctr is the process inside selfheal's test containers: a
// static binary that can run in a FROM scratch image and misbehave on
// demand (exit soon, ignore SIGTERM, turn healthy late or never, print
// given lines, flood its log, allocate past its memory limit).
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const healthFile = "/healthy"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		// The health check: healthy when the marker file exists.
		if _, err := os.Stat(healthFile); err != nil {
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "sick" {
		// Run with docker exec: the container fails its health check from
		// now until it restarts.
		if err := os.Remove(healthFile); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "alloc" {
		allocate(os.Args[2])
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "fetch" {
		// Run with docker exec: GET a URL from inside the container's
		// network namespace; exit 0 on a 2xx answer within 2s.
		client := http.Client{Timeout: 2 * time.Second}
		resp, err := client.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			fmt.Fprintln(os.Stderr, resp.Status)
			os.Exit(1)
		}
		return
	}
	exitAfter := flag.Duration("exit-after", 0, "exit this long after starting (0: never)")
	exitCode := flag.Int("exit-code", 1, "exit code for -exit-after")
	ignoreTerm := flag.Bool("ignore-term", false, "ignore SIGTERM (so a stop waits for its timeout)")
	healthyAfter := flag.Duration("healthy-after", 0, "become healthy this long after starting (negative: never)")
	listen := flag.String("http", "", "serve HTTP 200 on this address")
	var say lines
	flag.Var(&say, "say", "print this line to stderr at start (repeatable)")
	logBytes := flag.Int("log-bytes", 0, "write this many bytes of log lines to stdout at start")
	allocMB := flag.Int("alloc-mb", 0, "allocate (and touch) this many MiB at start, in a child process: past a --memory limit the kernel OOM-kills it, and the container exits 137")
	flag.Parse()

	for _, l := range say {
		fmt.Fprintln(os.Stderr, l)
	}
	if *logBytes > 0 {
		// Long lines, just under the 16 KiB at which Docker splits a
		// message: a flood of few messages, written fast.
		line := []byte(strings.Repeat("x", 16000-1) + "\n")
		for n := 0; n < *logBytes; n += len(line) {
			_, _ = os.Stdout.Write(line)
		}
	}
	if *allocMB > 0 {
		os.Exit(allocInChild(*allocMB))
	}

	_ = os.Remove(healthFile)
	if *healthyAfter >= 0 {
		time.AfterFunc(*healthyAfter, func() { _ = os.WriteFile(healthFile, nil, 0o644) })
	}
	if *listen != "" {
		go func() {
			err := http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "ok %s %s\n", r.Method, r.URL.Path)
			}))
			fmt.Fprintln(os.Stderr, err)
		}()
	}
	sig := make(chan os.Signal, 1)
	// SIGINT always ends it; listening for a signal also keeps a goroutine
	// alive, so a container that ignores SIGTERM and does nothing else is
	// not taken for a deadlock by the runtime.
	if *ignoreTerm {
		// Caught, not ignored, so that a test can see the stop was asked
		// for (the line below in the container's log).
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		go func() {
			for range term {
				fmt.Println(TermIgnored)
			}
		}()
		signal.Notify(sig, syscall.SIGINT)
	} else {
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	}
	var exit <-chan time.Time
	if *exitAfter > 0 {
		exit = time.After(*exitAfter)
	}
	fmt.Println("testctr started")
	select {
	case <-sig:
		os.Exit(0)
	case <-exit:
		os.Exit(*exitCode)
	}
}

// allocInChild allocates mb MiB in a child process and, once the kernel
// has killed it, exits as a process killed by SIGKILL does (137)
// oomEventSlack later. Not in PID 1 itself: containerd 1.6's shim sends the OOM
// event and the exit event from two goroutines, and when the exit is
// handled first Docker records the container as not OOM-killed
// (containerd #8180, #8893) — under load, often enough to fail the tests
// that read the evidence. Here the kill lands while the container still
// runs, as it does when a worker of a larger service is killed.
func allocInChild(mb int) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	child := exec.Command(self, "alloc", strconv.Itoa(mb))
	child.Stdout, child.Stderr = os.Stdout, os.Stderr
	err = child.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		fmt.Fprintf(os.Stderr, "the child allocating %d MiB was not killed: %v\n", mb, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "the child allocating %d MiB: %v\n", mb, err)
	time.Sleep(oomEventSlack)
	return 137
}

// oomEventSlack is how long the container outlives its OOM-killed child,
// so that Docker sees the OOM event before the exit. One second was not
// always enough on a loaded machine (2 cores, the whole suite running):
// the kernel's log showed the kill, and Docker recorded OOMKilled false.
const oomEventSlack = 3 * time.Second

// allocate is the child's part: the first process the kernel picks when
// the container reaches its memory limit, and then killed.
func allocate(mb string) {
	n, err := strconv.Atoi(mb)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0o644)
	var hold [][]byte
	for range n {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		hold = append(hold, b)
	}
	_ = hold
}

// TermIgnored is the line an -ignore-term container prints for each
// SIGTERM it ignores (dockertest.TermIgnored, the same).
const TermIgnored = "testctr: SIGTERM ignored"

// lines is a repeatable string flag.
type lines []string

func (l *lines) String() string     { return strings.Join(*l, "\n") }
func (l *lines) Set(s string) error { *l = append(*l, s); return nil }
