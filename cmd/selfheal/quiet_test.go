//go:build deploy

package main

// Nothing wrong → nothing done, for every configuration the repository
// ships (`make test-deploy`): each example served as written on this host,
// which runs none of the reference services, with the shipped rules and
// routing around it.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
)

// TestShippedConfigsQuietOnEmptyHost serves each shipped example
// configuration for three minutes with real Prometheus (the shipped rules
// as they are, evaluated every second) and Alertmanager (the shipped
// routing), and counts what happened: no action, nothing handed off, and
// no alert for selfheal (category A–D) or about it (Selfheal*) firing —
// nor pending, once the rules' one-minute rate windows hold a minute of
// this host rather than the burst of starting a dozen processes: a rule
// whose condition holds at all shows as pending long before its for:
// ends. Warnings for people about the machine itself
// (DiskWillFillIn24Hours on a disk images are built on) are not the
// configuration's doing.
//
// Substituted, and only this: ports and the database (each its own), the
// opt-in label (one of the test's own, so that nothing on this host is
// opted in — containers other tests opt in with the shipped label are not
// this test's to count), and the local stack's Alertmanager address.
func TestShippedConfigsQuietOnEmptyHost(t *testing.T) {
	for _, path := range []string{
		"deploy/selfheal.yml",
		"deploy/local/selfheal.yml",
		"deploy/examples/fleet/selfheal.yml",
		"deploy/examples/gateway-proxy/selfheal.yml",
	} {
		t.Run(filepath.Dir(path), func(t *testing.T) {
			t.Parallel()
			quietFor(t, path, 3*time.Minute)
		})
	}
}

func quietFor(t *testing.T, path string, d time.Duration) {
	s := newStack(t, dockertest.UniqueName("selfheal.quiet"), false)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	label := "require_label: " + s.labelKey() + "=true"
	pairs := []string{"require_label: selfheal.enable=true", label}
	if strings.Contains(path, "local") {
		pairs = []string{"require_label: selfheal.demo=make-run", label, "url: http://localhost:9093", "url: http://" + s.AM}
	}
	var env []string
	if strings.Contains(path, "fleet") {
		admin := []string{"SELFHEAL_DATABASE_URL=" + s.DSN}
		if code, _, errOut := selfheal(t, admin, "migrate"); code != 0 {
			t.Fatalf("migrate: %s", errOut)
		}
		node := strings.ToLower(dockertest.UniqueName("quiet"))
		env = []string{"SELFHEAL_DATABASE_URL=" + enrol(t, s.DSN, node, false), "SELFHEAL_NODE_NAME=" + node}
	}
	s.launch(t, files{
		Selfheal: shipped(t, path, pairs...),
		Alertmanager: shipped(t, "alerting/alertmanager.yml",
			"http://localhost:9595/api/v1/webhook", "http://"+s.Selfheal+"/api/v1/webhook",
			"/etc/alertmanager/selfheal-token", tokenFile),
		Env: env,
	}, tokenFile)
	rules, err := filepath.Abs("../../alerting/rules")
	if err != nil {
		t.Fatal(err)
	}
	s.prometheus(t, rules, time.Second, time.Second)

	dockertest.WaitFor(t, 30*time.Second, "Prometheus scraping selfheal's exporter", func() bool {
		v, ok := s.promValue(t, `count(selfheal_cpu_seconds_total)`)
		return ok && v != "0"
	})
	start := time.Now()
	for time.Since(start) < d {
		if n := queryInt(t, s.DB, `SELECT count(*) FROM recovery_actions`); n != 0 {
			t.Fatalf("%s: %d action(s) on a host where nothing is wrong", path, n)
		}
		state := `alertstate="firing"`
		if time.Since(start) > 70*time.Second {
			state = `alertstate=~"firing|pending"`
		}
		if v, ok := s.promValue(t, `count(ALERTS{category=~"A|B|C|D",`+state+`} or ALERTS{alertname=~"Selfheal.*",`+state+`})`); ok {
			t.Fatalf("%s: %s alert(s) for selfheal, or about it, where nothing is wrong: %s", path, v, alertsOf(t, s.PromURL))
		}
		time.Sleep(5 * time.Second)
	}
	if n := queryInt(t, s.DB, `SELECT count(*) FROM alert_occurrences`); n != 0 {
		t.Errorf("%s: %d alert(s) reached selfheal", path, n)
	}
	var own []json.RawMessage
	resp, err := http.Get("http://" + s.AM + "/api/v2/alerts?filter=" + url.QueryEscape(`source="selfheal"`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&own); err != nil || len(own) != 0 {
		t.Errorf("%s: selfheal's own alerts in Alertmanager: %d (%v)", path, len(own), err)
	}
}

// alertsOf lists Prometheus' active alerts, for a failure message.
func alertsOf(t *testing.T, promURL string) string {
	resp, err := http.Get(promURL + "/api/v1/alerts")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err.Error()
	}
	var out []string
	for _, a := range r.Data.Alerts {
		out = append(out, a.State+" "+a.Labels["alertname"])
	}
	return strings.Join(out, ", ")
}
