package report

import (
	"encoding/json"
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

func TestJSONOutputs(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	var b strings.Builder
	acts := []store.Activity{{Time: t0.Add(time.Second), Kind: "event", What: "clear"}, {Time: t0, Kind: "alert", What: "ServiceDown"}}
	if err := WriteActivityJSON(&b, acts, false); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil || len(got) != 2 || got[0]["what"] != "ServiceDown" || got[1]["kind"] != "event" {
		t.Errorf("events, oldest first: %v %s", err, b.String())
	}
	b.Reset()
	nodes := []store.NodeStatus{{Name: "edge-01", LastHeartbeat: t0, AsOf: t0.Add(5 * time.Minute), Queued: 2}, {Name: "edge-02"}}
	if err := WriteNodesJSON(&b, nodes, time.Minute); err != nil {
		t.Fatal(err)
	}
	got = nil
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil || len(got) != 2 || got[0]["state"] != "silent" ||
		got[0]["queued"] != 2.0 || got[1]["state"] != "never seen" || got[1]["last_heartbeat"] != nil {
		t.Errorf("nodes: %v %s", err, b.String())
	}
}
