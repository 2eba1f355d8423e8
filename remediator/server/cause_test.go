package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// oomCause sends a target the kernel OOM-killed to people after one
// restart, where an ordinary crash keeps the ladder.
const oomCause = `
    causes:
      - name: oom-killed
        when: {oom_killed: true}
        max_failures: 2
        escalate_to: ''`

// TestCauseChoosesTheBranch: a container really OOM-killed (a memory limit,
// a program that allocates past it) takes the oom-killed branch — one
// restart, then handed to people, the cause in the decision's reason; the
// same container under the remediation without the branch keeps the
// ladder: restart, stop_start, then critical recovery.
func TestCauseChoosesTheBranch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, causes string
		actions      []string // in order
		escalatedTo  string
	}{
		{"with the branch", oomCause, []string{"restart"}, ""},
		{"without", "", []string{"restart", "stop_start"}, "critical-recovery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // a database, a container and an opt-in label of its own
			label := labelKey(t) + "." + strings.ReplaceAll(tc.name, " ", "-")
			name := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{label: "true"}, Memory: 32 << 20, Args: []string{"-alloc-mb=256"}})
			dockertest.WaitFor(t, 20*time.Second, name+" OOM-killed", func() bool {
				st := dockertest.State(t, name)
				return !st.Running && st.OOMKilled
			})
			dsn := pgtest.DSN(t)
			// A restart succeeds once the container stayed up stable_for:
			// long enough here that the kernel's OOM kill, however slow a
			// loaded machine starts the container, comes first (a failed
			// verification ends as soon as the container dies).
			text := strings.Replace(baseConfig, "verify: {timeout: 10s, stable_for: 1s}", "verify: {timeout: 20s, stable_for: 5s}", 1)
			text = strings.Replace(text, "    escalate_to: critical-recovery\n", "    escalate_to: critical-recovery"+tc.causes+"\n", 1)
			cfg := configText(t, dsn, text)
			cfg.Targets.Docker.RequireLabel = label + "=true"
			in, conn := ready(t, cfg)
			if code := in.post(t, payload(t, "service-down-firing.json", name)); code != 200 {
				t.Fatalf("webhook answered %d", code)
			}
			waitFor(t, 60*time.Second, "the escalation", func() bool {
				return count(t, conn, `SELECT count(*) FROM escalations WHERE service_name = $1 AND remediation = 'service-down'`, name) == 1
			})
			waitIdle(t, conn)
			var actions []string
			rows, err := conn.Query(t.Context(), `SELECT action_type FROM recovery_actions
				WHERE service_name = $1 AND remediation = 'service-down' ORDER BY started_at`, name)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var a string
				if err := rows.Scan(&a); err != nil {
					t.Fatal(err)
				}
				actions = append(actions, a)
			}
			if strings.Join(actions, ",") != strings.Join(tc.actions, ",") {
				t.Errorf("actions %v, want %v", actions, tc.actions)
			}
			var to, reason string
			if err := conn.QueryRow(t.Context(), `SELECT COALESCE(escalate_to, ''), reason FROM escalations WHERE service_name = $1`, name).Scan(&to, &reason); err != nil {
				t.Fatal(err)
			}
			branched := strings.HasPrefix(reason, "cause oom-killed (OOM-killed): ")
			if to != tc.escalatedTo || branched != (tc.causes != "") {
				t.Errorf("escalated to %q: %q", to, reason)
			}
			// Every action kept the evidence: killed for memory.
			if n := count(t, conn, `SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND remediation = 'service-down'
				AND (details->'evidence'->>'oom_killed')::bool`, name); n != len(tc.actions) {
				t.Errorf("%d of %d actions kept OOMKilled=true", n, len(tc.actions))
			}
		})
	}
}
