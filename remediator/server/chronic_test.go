package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/store"
)

// TestChronicHoldUntilCleared: with engine.chronic.hold, a target repaired
// max_remediations times within the window (backdated in the audit trail)
// is refused — not started — until a person runs selfheal clear; then the
// next outage is healed.
func TestChronicHoldUntilCleared(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	dsn := pgtest.DSN(t)
	in, conn := ready(t, configText(t, dsn, strings.Replace(baseConfig, "  poll_interval: 200ms\n",
		"  poll_interval: 200ms\n  chronic: {max_remediations: 3, window: 3d, hold: true}\n", 1)))
	if _, err := conn.Exec(context.Background(), `INSERT INTO recovery_actions (service_name, action_type, status, remediation, started_at)
		SELECT $1, 'restart', 'succeeded', 'service-down', now() - d * interval '1 day' + interval '1 hour' FROM generate_series(1, 3) d`, name); err != nil {
		t.Fatal(err)
	}
	in.post(t, payload(t, "service-down-firing.json", name))
	waitFor(t, 10*time.Second, "the chronic refusal", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE target = $1 AND outcome = 'refused'
			AND reason LIKE 'chronic: at least 3 remediations of the target within 3d (the limit): held for a person%'`, name) == 1
	})
	if dockertest.State(t, name).Running {
		t.Fatal("a chronic target held for a person was started")
	}

	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.ClearTarget(context.Background(), store.Clear{Target: name, By: "alice", Reason: "fixed the leak"}); err != nil {
		t.Fatal(err)
	}
	in.post(t, withStartsAt(payload(t, "service-down-firing.json", name), time.Now()))
	waitFor(t, 20*time.Second, name+" healed after the clear", func() bool { return dockertest.State(t, name).Running })
}
