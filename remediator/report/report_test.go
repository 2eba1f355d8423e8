package report

import (
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/store"
)

// TestWriteNodes: each node's state is judged by the database's clock at
// the read (AsOf), and the table says when each was last heard from.
func TestWriteNodes(t *testing.T) {
	asOf := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	nodes := []store.NodeStatus{
		{Name: "edge-01", LastHeartbeat: asOf.Add(-5 * time.Second), AsOf: asOf, Version: "1.0", ConfigFingerprint: "abc", Enrolled: true},
		{Name: "edge-02", LastHeartbeat: asOf.Add(-2 * time.Minute), AsOf: asOf, Queued: 3, OldestQueued: asOf.Add(-90 * time.Second)},
		{Name: "edge-03", LastHeartbeat: asOf.Add(-time.Second), Stopped: true, AsOf: asOf},
		{Name: "edge-04", Queued: 1, OldestQueued: asOf.Add(-time.Hour), AsOf: asOf},
	}
	var b strings.Builder
	if err := WriteNodes(&b, nodes, time.Minute); err != nil {
		t.Fatal(err)
	}
	want := `NODE     STATE       LAST HEARTBEAT  QUEUED  OLDEST QUEUED  VERSION  CONFIG  ROLE
edge-01  alive       5s ago          0       -              1.0      abc     own
edge-02  silent      2m0s ago        3       1m30s ago      -        -       shared
edge-03  stopped     1s ago          0       -              -        -       shared
edge-04  never seen  never           1       1h0m0s ago     -        -       shared
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
