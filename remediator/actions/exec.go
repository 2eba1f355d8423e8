package actions

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/selfheal/selfheal/internal/tail"
	"github.com/selfheal/selfheal/remediator/action"
)

func init() {
	register("exec", newExecParams, func(Deps) action.Executor { return Exec{} })
}

// Exec's bounds.
const (
	DefaultExecTimeout = 30 * time.Second
	// execOutputBytes is how much of each of stdout and stderr is kept
	// (the newest bytes).
	execOutputBytes = 4 << 10
)

// ExecParams are exec's parameters: the operator's own fix for an alert,
// run directly — never through a shell.
type ExecParams struct {
	// Command is the argv: an absolute path, on targets.exec.allow, then
	// its arguments, each a template over the alert ({{ .Target }},
	// {{ .Labels.x }}) that renders to exactly one argument whatever the
	// value holds (spaces, quotes, "; rm -rf /", "--flag").
	Command []string `yaml:"command"`
	// Env is the whole environment the command gets; nothing of selfheal's
	// own is passed on.
	Env map[string]string `yaml:"env"`
	// Timeout kills the command (its whole process group) past it.
	Timeout action.Duration `yaml:"timeout"`
	// StopOnResolve kills it when its alert resolves (checked every few
	// seconds): the fix is no longer needed, and the step succeeds.
	StopWhenResolved bool `yaml:"stop_on_resolve"`
}

// StopOnResolve implements action.StopsOnResolve.
func (p *ExecParams) StopOnResolve() bool { return p.StopWhenResolved }

func newExecParams() action.Params { return &ExecParams{Timeout: action.Duration(DefaultExecTimeout)} }

// Problems implements action.Params.
func (p *ExecParams) Problems() []string {
	probs := commandProblems(p.Command)
	if len(p.Command) > 0 {
		if exe := p.Command[0]; !filepath.IsAbs(exe) || strings.Contains(exe, "{{") || filepath.Clean(exe) != exe {
			probs = append(probs, fmt.Sprintf("command: %q: the executable must be a clean absolute path, not a template", exe))
		}
	}
	for k := range p.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			probs = append(probs, fmt.Sprintf("env: %q is not a variable name", k))
		}
	}
	if p.Timeout <= 0 {
		probs = append(probs, "timeout: must be positive")
	}
	return probs
}

// Executable implements action.Executable: what targets.exec.allow must
// list.
func (p *ExecParams) Executable() string {
	if len(p.Command) == 0 {
		return ""
	}
	return p.Command[0]
}

// Exec runs an operator-defined command. Its exit code is the result; its
// output, bounded, is kept with the action.
type Exec struct{}

var (
	_ action.Executor       = Exec{}
	_ action.Executable     = (*ExecParams)(nil)
	_ action.StopsOnResolve = (*ExecParams)(nil)
)

// Permit implements action.Executor: the executable is there and may be
// run. (That it is allowed, check-config and every reload checked.)
func (Exec) Permit(_ context.Context, req action.Request) error {
	exe := paramsOf[*ExecParams](req, newExecParams).Executable()
	fi, err := os.Stat(exe)
	switch {
	case err != nil:
		return &action.Refusal{Severity: action.Error, Reason: fmt.Sprintf("exec: %v", err)}
	case fi.IsDir() || fi.Mode()&0o111 == 0:
		return &action.Refusal{Severity: action.Error, Reason: fmt.Sprintf("exec: %s is not executable", exe)}
	}
	return nil
}

// Execute implements action.Executor.
func (Exec) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	p := paramsOf[*ExecParams](req, newExecParams)
	argv, err := renderCommand(p.Command, map[string]any{"Target": req.Target, "Labels": req.Labels, "Remediation": req.Remediation})
	if err != nil {
		return action.Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout.D())
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = make([]string, 0, len(p.Env))
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		cmd.Env = append(cmd.Env, k+"="+p.Env[k])
	}
	cmd.Dir = "/"
	// Its own process group, so a timeout kills what it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	stdout, stderr := tail.New(execOutputBytes), tail.New(execOutputBytes)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	err = cmd.Run()
	res := action.Result{Details: map[string]any{
		"argv": argv, "exit_code": cmd.ProcessState.ExitCode(), "seconds": time.Since(start).Seconds(),
		"stdout": stdout.String(), "stderr": stderr.String(),
	}}
	switch {
	case errors.Is(context.Cause(ctx), action.ErrAlertResolved):
		res.Details["stopped"] = "its alert resolved"
		return res, nil
	case ctx.Err() != nil:
		res.Details["killed"] = fmt.Sprintf("past its timeout of %s", p.Timeout)
		return res, fmt.Errorf("exec %s: killed past its timeout of %s", argv[0], p.Timeout)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		msg := fmt.Sprintf("exec %s: %v", argv[0], exit)
		if last := lastLine(stderr.String()); last != "" {
			msg += ": " + last
		}
		return res, errors.New(msg)
	case err != nil:
		return res, fmt.Errorf("exec %s: %w", argv[0], err)
	}
	return res, nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}
