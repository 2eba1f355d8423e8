package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/engine"
)

// TestStackThroughTheDaemon: a gateway and a proxy in its namespace,
// through selfheal as deployed: the plan names the proxy, the gateway's
// crash restarts both, the proxy's restart is its own row under the job,
// and selfheal events says so.
func TestStackThroughTheDaemon(t *testing.T) {
	t.Parallel()
	label, requireLabel := dockertest.OptIn()
	gateway := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "bridge"})
	proxy := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "container:" + gateway})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, strings.Replace(faultConfig, "steps: [restart, stop_start]",
		"steps: [{type: restart, dependents: restart}, stop_start]", 1))
	addr := freeAddr(t)
	daemon(t, env, config, addr)
	conn := connect(t, dsn)

	_, out, errOut := selfheal(t, env, "plan", "--config.file="+config, "--output=json", "ServiceDown", "service="+gateway)
	var plans []engine.Plan
	if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 1 || !slices.Equal(plans[0].Touches, []string{proxy}) {
		t.Fatalf("plan: %q %q: %v", out, errOut, err)
	}

	dockertest.Kill(t, gateway)
	post(t, env, addr, "ServiceDown", "service="+gateway)
	dockertest.WaitFor(t, 30*time.Second, "the proxy restarted under the gateway's job", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions d JOIN recovery_actions a ON a.id = d.parent_action_id
			WHERE d.service_name = $1 AND d.status = 'succeeded' AND a.service_name = $2 AND a.status = 'succeeded'
			AND d.job_id = a.job_id`, proxy, gateway) == 1
	})
	if !dockertest.State(t, proxy).Running || !dockertest.State(t, gateway).Running {
		t.Fatal("not both running")
	}
	_, out, _ = selfheal(t, env, "events", "--limit=20")
	if !strings.Contains(out, "restart of "+proxy+" (dependent of "+gateway+") succeeded") {
		t.Errorf("selfheal events does not show the dependent:\n%s", out)
	}
}
