// Package report prints selfheal's audit trail for people.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/store"
)

// WriteActivity prints acts, oldest first, as an aligned table; with
// details, each action's evidence (its target's state and last log lines
// before it was changed) follows its row.
func WriteActivity(w io.Writer, acts []store.Activity, loc *time.Location, details bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tSTATUS\tTARGET\tREMEDIATION\tWHAT\tDETAIL")
	for i := len(acts) - 1; i >= 0; i-- {
		a := acts[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			a.Time.In(loc).Format("2006-01-02 15:04:05.000"), a.Kind, a.Severity,
			dash(a.Target), dash(a.Remediation), a.What, oneLine(a.Detail))
		if ev, ok := a.Details["evidence"].(map[string]any); ok && details {
			// Flushed first: lines outside the table's columns.
			if err := tw.Flush(); err != nil {
				return err
			}
			writeEvidence(w, ev)
		}
	}
	return tw.Flush()
}

// writeEvidence prints an action's evidence, indented under its row.
func writeEvidence(w io.Writer, raw map[string]any) {
	ev := EvidenceOf(raw)
	summary := ev.Summary()
	if summary == "" { // not a container's (a GPU's holders): as recorded
		b, _ := json.Marshal(raw)
		summary = string(b)
	}
	fmt.Fprintf(w, "    evidence: %s\n", summary)
	if ev.Health != "" {
		fmt.Fprintf(w, "    last health check: %s\n", oneLine(ev.Health))
	}
	if ev.Logs != "" {
		fmt.Fprintln(w, "    last log lines:")
		for l := range strings.SplitSeq(strings.TrimRight(ev.Logs, "\n"), "\n") {
			fmt.Fprintf(w, "    | %s\n", l)
		}
	}
}

// EvidenceOf reads the evidence an action recorded (its details'
// "evidence", as JSON decodes it).
func EvidenceOf(raw map[string]any) containers.Evidence {
	var ev containers.Evidence
	b, err := json.Marshal(raw)
	if err == nil {
		err = json.Unmarshal(b, &ev)
	}
	if err != nil {
		ev.NotKept = "unreadable: " + err.Error()
	}
	return ev
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps each row on one line: tabs and newlines would break the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// WritePlan prints what selfheal would do with one alert, a field a line.
func WritePlan(w io.Writer, p engine.Plan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, oneLine(v)) }
	row("ALERT", labelString(p.Labels))
	if p.Remediation == "" {
		row("REMEDIATION", "none")
	} else {
		row("REMEDIATION", fmt.Sprintf("%s (category %s)", p.Remediation, p.Category))
	}
	row("NODE", dash(p.Node))
	if p.Target != "" {
		row("TARGET", p.Target)
		if p.Cause != "" {
			row("CAUSE", p.Cause)
		}
		row("PERMITTED", map[bool]string{true: "yes", false: "no: " + p.Permit}[p.Permit == ""])
		row("FAILURES", fmt.Sprintf("%d within %s, this alert counted (escalates at %d)", p.Failures, p.FailureWindow, p.MaxFailures))
		cooldown := "none"
		if p.CooldownUntil != nil {
			cooldown = "until " + p.CooldownUntil.Format(time.RFC3339)
		}
		row("COOLDOWN", cooldown)
		row("ESCALATED", map[bool]string{true: "no", false: "to " + p.EscalatedTo}[p.EscalatedTo == ""])
		row("HELD BACK", map[bool]string{true: "no", false: p.HeldBack}[p.HeldBack == ""])
	}
	verdict := string(p.Verdict)
	if p.Action != "" {
		verdict += fmt.Sprintf(": %s (attempt %d)", p.Action, p.Attempt)
	}
	row("VERDICT", verdict)
	if len(p.Touches) > 0 {
		row("ALSO TOUCHES", strings.Join(p.Touches, ", "))
	}
	row("REASON", p.Reason)
	if p.IfItFails != "" {
		row("IF IT FAILS", p.IfItFails)
	}
	if ev, ok := p.Evidence.(containers.Evidence); ok {
		row("EVIDENCE NOW", ev.Summary())
		if last := ev.LastLines(1, 200); last != "" {
			row("LAST LOG LINE", last)
		}
	}
	return tw.Flush()
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		if k != "alertname" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return l["alertname"] + "{" + strings.Join(parts, ", ") + "}"
}

// WriteNodes prints the fleet's nodes: when each was last heard from, how
// many jobs wait for it, its version and configuration fingerprint.
func WriteNodes(w io.Writer, nodes []store.NodeStatus, silentAfter time.Duration) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tLAST HEARTBEAT\tQUEUED\tOLDEST QUEUED\tVERSION\tCONFIG\tROLE")
	for _, n := range nodes {
		state, beat := nodeState(n, silentAfter), "never"
		if !n.LastHeartbeat.IsZero() {
			beat = fmt.Sprintf("%s ago", n.AsOf.Sub(n.LastHeartbeat).Round(time.Second))
		}
		oldest := "-"
		if !n.OldestQueued.IsZero() {
			oldest = fmt.Sprintf("%s ago", n.AsOf.Sub(n.OldestQueued).Round(time.Second))
		}
		role := "shared"
		if n.Enrolled {
			role = "own"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", n.Name, state, beat, n.Queued, oldest,
			dash(n.Version), dash(n.ConfigFingerprint), role)
	}
	return tw.Flush()
}

// nodeState is alive, silent, stopped or never seen.
func nodeState(n store.NodeStatus, silentAfter time.Duration) string {
	switch {
	case n.LastHeartbeat.IsZero():
		return "never seen"
	case n.Stopped:
		return "stopped"
	case n.Silent(silentAfter):
		return "silent"
	}
	return "alive"
}

// WriteCleared says what `selfheal clear` ended.
func WriteCleared(w io.Writer, target string, c store.Cleared) {
	fmt.Fprintf(w, "cleared %s: its next outage starts the ladder again\n", target)
	if len(c.Escalations) > 0 {
		fmt.Fprintf(w, "  escalations closed: %s\n", strings.Join(c.Escalations, ", "))
	}
	if c.Failures > 0 {
		fmt.Fprintf(w, "  failures no longer counted: %d\n", c.Failures)
	}
	if len(c.Cooldowns) > 0 {
		fmt.Fprintf(w, "  cooldowns ended: %s\n", strings.Join(c.Cooldowns, ", "))
	}
}

// jsonActivity is one line of `selfheal events --output=json`.
type jsonActivity struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"kind"`
	Severity    string    `json:"severity"`
	Target      string    `json:"target"`
	Remediation string    `json:"remediation"`
	What        string    `json:"what"`
	Detail      string    `json:"detail"`
	Details     any       `json:"details,omitempty"`
}

// WriteActivityJSON prints acts, oldest first, as a JSON array; with
// details, each action's and event's recorded details (evidence too).
func WriteActivityJSON(w io.Writer, acts []store.Activity, details bool) error {
	out := make([]jsonActivity, 0, len(acts))
	for i := len(acts) - 1; i >= 0; i-- {
		a := acts[i]
		j := jsonActivity{a.Time.UTC(), a.Kind, a.Severity, a.Target, a.Remediation, a.What, a.Detail, nil}
		if details && len(a.Details) > 0 {
			j.Details = a.Details
		}
		out = append(out, j)
	}
	return writeJSON(w, out)
}

// jsonNode is one node of `selfheal nodes --output=json`.
type jsonNode struct {
	Name              string     `json:"name"`
	State             string     `json:"state"` // alive, silent, stopped, never seen
	LastHeartbeat     *time.Time `json:"last_heartbeat"`
	Queued            int64      `json:"queued"`
	OldestQueued      *time.Time `json:"oldest_queued"`
	Version           string     `json:"version"`
	ConfigFingerprint string     `json:"config_fingerprint"`
	OwnRole           bool       `json:"own_role"`
}

// WriteNodesJSON prints the fleet's nodes as a JSON array.
func WriteNodesJSON(w io.Writer, nodes []store.NodeStatus, silentAfter time.Duration) error {
	out := make([]jsonNode, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, jsonNode{Name: n.Name, State: nodeState(n, silentAfter), LastHeartbeat: timeOrNil(n.LastHeartbeat),
			Queued: n.Queued, OldestQueued: timeOrNil(n.OldestQueued), Version: n.Version,
			ConfigFingerprint: n.ConfigFingerprint, OwnRole: n.Enrolled})
	}
	return writeJSON(w, out)
}

// ConfigCheck is `selfheal check-config --output=json`: valid or not,
// with every error and warning.
type ConfigCheck struct {
	File         string   `json:"file"`
	Valid        bool     `json:"valid"`
	Remediations int      `json:"remediations"`
	Errors       []string `json:"errors"`
	Warnings     []string `json:"warnings"`
}

// WriteConfigCheckJSON prints c as JSON.
func WriteConfigCheckJSON(w io.Writer, c ConfigCheck) error {
	if c.Errors == nil {
		c.Errors = []string{}
	}
	if c.Warnings == nil {
		c.Warnings = []string{}
	}
	return writeJSON(w, c)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
