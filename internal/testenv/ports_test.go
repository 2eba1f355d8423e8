package testenv

import (
	"net"
	"testing"
)

// TestReservedPortsAreExclusive: a reserved port is not handed out again
// while held, lies below the ephemeral range, and can be listened on.
func TestReservedPortsAreExclusive(t *testing.T) {
	low, err := ephemeralLow()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	var held []*Reservation
	for range 200 {
		r, err := ReservePort()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
		if seen[r.Port] {
			t.Fatalf("port %d reserved twice while held", r.Port)
		}
		if r.Port < portFloor || r.Port >= low {
			t.Fatalf("port %d outside [%d, %d)", r.Port, portFloor, low)
		}
		seen[r.Port] = true
	}
	l, err := net.Listen("tcp", held[0].Addr())
	if err != nil {
		t.Fatalf("listen on a reserved port: %v", err)
	}
	l.Close()
	for _, r := range held {
		r.Release()
	}
}
