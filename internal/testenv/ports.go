package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A port that a test learns by listening on port 0 and closing the
// listener is free only until someone else takes it: the kernel hands the
// same ephemeral ports to other :0 listeners (another package's test
// binary, Prometheus) and to outgoing connections. A test server started
// on it then fails with "address already in use" once in a while.
//
// Reserved ports avoid both: they lie below the kernel's ephemeral range,
// which it never gives out by itself, and each is held by an exclusive
// lock on a file in portDir for as long as the test runs, which every test
// process on this machine honours.

// portDir holds one lock file per reserved port.
var portDir = filepath.Join(os.TempDir(), "selfheal-test-ports")

// portFloor is the lowest port handed out: above the well-known and the
// commonly configured ones.
const portFloor = 20000

// Reservation is a loopback port reserved for one user until Release.
type Reservation struct {
	Port int
	lock *os.File
}

// Addr is the reservation's loopback host:port.
func (r *Reservation) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// Release gives the port back.
func (r *Reservation) Release() {
	if r.lock != nil {
		_ = syscall.Flock(int(r.lock.Fd()), syscall.LOCK_UN)
		r.lock.Close()
		r.lock = nil
	}
}

// ReservePort reserves a loopback port nothing listens on, below the
// kernel's ephemeral range, that no other test process may reserve until
// it is released (or this process exits).
func ReservePort() (*Reservation, error) {
	low, err := ephemeralLow()
	if err != nil {
		return nil, err
	}
	if low <= portFloor+1000 {
		return nil, fmt.Errorf("the ephemeral port range starts at %d: no room below it for test ports", low)
	}
	if err := os.MkdirAll(portDir, 0o777); err != nil {
		return nil, err
	}
	for range 1000 {
		port := portFloor + rand.IntN(low-portFloor)
		f, err := os.OpenFile(filepath.Join(portDir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close() // another test holds it
			continue
		}
		r := &Reservation{Port: port, lock: f}
		l, err := net.Listen("tcp", r.Addr())
		if err != nil {
			r.Release() // in use by something that does not reserve
			continue
		}
		l.Close()
		return r, nil
	}
	return nil, errors.New("no free port below the ephemeral range after 1000 tries")
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768, nil // Linux's default where /proc cannot tell
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, fmt.Errorf("ip_local_port_range: unexpected %q", b)
	}
	return strconv.Atoi(f[0])
}

// FreeAddr returns a loopback host:port reserved for t (ReservePort):
// nothing listens on it, and no other test or outgoing connection takes
// it before t's server binds it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	r, err := ReservePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Release)
	return r.Addr()
}
