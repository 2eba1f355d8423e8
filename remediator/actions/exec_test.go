package actions

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
)

func execReq(command []string, timeout time.Duration, labels map[string]string) action.Request {
	return action.Request{Target: "llm", Labels: labels,
		Params: &ExecParams{Command: command, Timeout: action.Duration(timeout), Env: map[string]string{"MODE": "flush"}}}
}

// TestExec: the exit code is the result; output is kept, bounded; a
// command past its timeout is killed and recorded; an alert's label value
// arrives as one literal argument, never through a shell; the environment
// is only what the step gives.
func TestExec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if err := (Exec{}).Permit(ctx, execReq([]string{"/bin/true"}, time.Second, nil)); err != nil {
		t.Fatalf("permit /bin/true: %v", err)
	}
	if err := (Exec{}).Permit(ctx, execReq([]string{"/no/such/fix"}, time.Second, nil)); err == nil {
		t.Error("permitted a program that is not there")
	}
	if res, err := (Exec{}).Execute(ctx, execReq([]string{"/bin/true"}, time.Second, nil)); err != nil || res.Details["exit_code"] != 0 {
		t.Errorf("/bin/true: %v %v", res.Details, err)
	}
	if res, err := (Exec{}).Execute(ctx, execReq([]string{"/bin/false"}, time.Second, nil)); err == nil || res.Details["exit_code"] != 1 {
		t.Errorf("/bin/false: %v %v", res.Details, err)
	}

	start := time.Now()
	res, err := (Exec{}).Execute(ctx, execReq([]string{"/bin/sleep", "30"}, 300*time.Millisecond, nil))
	if err == nil || !strings.Contains(err.Error(), "killed past its timeout of 300ms") || res.Details["killed"] == nil || time.Since(start) > 10*time.Second {
		t.Errorf("past the timeout: %v %v after %s", res.Details, err, time.Since(start))
	}

	hostile := map[string]string{"service": "x; rm -rf /", "flag": "--flag", "quote": `it's "quoted" $(id)`}
	res, err = (Exec{}).Execute(ctx, execReq([]string{"/usr/bin/printf", "[%s]", "{{ .Labels.service }}", "{{ .Labels.flag }}", "{{ .Labels.quote }}"}, time.Second, hostile))
	if want := `[x; rm -rf /][--flag][it's "quoted" $(id)]`; err != nil || res.Details["stdout"] != want {
		t.Errorf("arguments: %q (%v), want %q", res.Details["stdout"], err, want)
	}

	res, err = (Exec{}).Execute(ctx, execReq([]string{"/usr/bin/env"}, time.Second, nil))
	if err != nil || res.Details["stdout"] != "MODE=flush\n" {
		t.Errorf("environment: %q (%v), want only MODE=flush", res.Details["stdout"], err)
	}

	// Output is bounded: the newest bytes of a flood.
	res, _ = (Exec{}).Execute(ctx, execReq([]string{"/bin/sh", "-c", "yes line | head -c 1000000; echo; echo last >&2; exit 3"}, 5*time.Second, nil))
	if out, _ := res.Details["stdout"].(string); len(out) > execOutputBytes || res.Details["stderr"] != "last\n" || res.Details["exit_code"] != 3 {
		t.Errorf("flood: %d bytes kept, stderr %q, exit %v", len(out), res.Details["stderr"], res.Details["exit_code"])
	}
}

func TestExecParams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    ExecParams
		want string
	}{
		{ExecParams{Command: []string{"flush-cache"}, Timeout: 1}, `the executable must be a clean absolute path`},
		{ExecParams{Command: []string{"/usr/bin/{{ .Labels.x }}"}, Timeout: 1}, `not a template`},
		{ExecParams{Command: []string{"/bin/true"}}, "timeout: must be positive"},
		{ExecParams{}, "command: must not be empty"},
		{ExecParams{Command: []string{"/bin/true"}, Timeout: 1, Env: map[string]string{"A=B": "c"}}, `env: "A=B" is not a variable name`},
	} {
		if got := strings.Join(tc.p.Problems(), "; "); !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.p, got, tc.want)
		}
	}
}
