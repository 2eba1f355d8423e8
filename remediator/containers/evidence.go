package containers

// Evidence: what a careful engineer looks at before restarting a container,
// read before selfheal changes it — once it has restarted, `docker logs`
// and the dead run's exit state are gone.

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/tail"
)

// EvidenceOptions bound what Evidence keeps.
type EvidenceOptions struct {
	// LogLines is how many of the last log lines to keep; 0 reads no logs.
	LogLines int
	// LogBytes bounds the kept lines (the newest are kept), in memory as
	// in the record, however much the container wrote.
	LogBytes int
	// Redact are patterns whose matches in the logs and the health-check
	// output are replaced by [REDACTED] before anything is kept: the
	// first group's text where the pattern has a group (the value of
	// password=…), else the whole match.
	Redact []*regexp.Regexp
}

// Evidence is a container's state before an action changes it.
type Evidence struct {
	Container    string    `json:"container"`
	Status       string    `json:"status"` // running, exited, …
	ExitCode     int       `json:"exit_code"`
	OOMKilled    bool      `json:"oom_killed"`
	Error        string    `json:"error,omitempty"` // the runtime's, when it could not start it
	RestartCount int       `json:"restart_count"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	FinishedAt   time.Time `json:"finished_at,omitzero"`
	// RanFor is how long its last run lasted (FinishedAt - StartedAt),
	// when it has stopped: "died within N s of starting".
	RanFor float64 `json:"ran_for_seconds,omitempty"`
	// Health is the last health-check's output, when it has one.
	Health string `json:"health,omitempty"`
	// Logs are its last lines, stdout and stderr as they came.
	Logs string `json:"logs,omitempty"`
	// LogsTruncated: there was more than LogBytes of those lines.
	LogsTruncated bool `json:"logs_truncated,omitempty"`
	// LogsError says why the logs could not be read.
	LogsError string `json:"logs_error,omitempty"`
	// NotKept, in a record, says why there is no evidence at all (the
	// engine's, when Evidence failed).
	NotKept string `json:"not_kept,omitempty"`
}

// Summary is the evidence in one line: the container's state before the
// action — status, exit code, OOM kill, how long its last run lasted.
// Empty when the record is not a container's (a GPU's holders, say).
func (ev Evidence) Summary() string {
	if ev.NotKept != "" {
		return "not kept: " + ev.NotKept
	}
	if ev.Container == "" {
		return ""
	}
	parts := []string{ev.Status, fmt.Sprintf("exit code %d", ev.ExitCode), fmt.Sprintf("OOM-killed %t", ev.OOMKilled)}
	if ev.RanFor > 0 {
		parts = append(parts, "ran "+time.Duration(ev.RanFor*float64(time.Second)).Round(time.Millisecond).String())
	}
	if ev.RestartCount > 0 {
		parts = append(parts, fmt.Sprintf("%d restarts by Docker", ev.RestartCount))
	}
	if ev.Error != "" {
		parts = append(parts, "runtime error: "+ev.Error)
	}
	if ev.LogsError != "" {
		parts = append(parts, "logs not read: "+ev.LogsError)
	}
	return strings.Join(parts, ", ")
}

// LastLines are the newest lines of the kept logs, at most n and max
// bytes: what fits in an alert's annotation.
func (ev Evidence) LastLines(n, max int) string {
	lines := strings.Split(strings.TrimRight(ev.Logs, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := strings.Join(lines, "\n")
	if len(s) > max {
		s = strings.ToValidUTF8(s[len(s)-max:], "")
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	return s
}

// Evidence reads name's state and last log lines, changing nothing,
// within the bounds configured (Options.Evidence). Only an opted-in
// container's: it is the first thing an action on it does. The logs are
// best effort (a logging driver that keeps none, a slow daemon): their
// error is recorded, not returned.
func (c *Client) Evidence(ctx context.Context, name string) (Evidence, error) {
	o := *c.evidence.Load()
	info, err := c.permitted(ctx, name)
	if err != nil {
		return Evidence{}, err
	}
	st := info.State
	ev := Evidence{Container: strings.TrimPrefix(info.Name, "/"), RestartCount: info.RestartCount}
	if st != nil {
		ev.Status, ev.ExitCode, ev.OOMKilled, ev.Error = string(st.Status), st.ExitCode, st.OOMKilled, st.Error
		ev.StartedAt, ev.FinishedAt = parseDockerTime(st.StartedAt), parseDockerTime(st.FinishedAt)
		if !st.Running && !ev.StartedAt.IsZero() && ev.FinishedAt.After(ev.StartedAt) {
			ev.RanFor = ev.FinishedAt.Sub(ev.StartedAt).Seconds()
		}
		if h := st.Health; h != nil && len(h.Log) > 0 {
			last := h.Log[len(h.Log)-1]
			ev.Health = redact(strings.TrimSpace(fmt.Sprintf("exit %d: %s", last.ExitCode, last.Output)), o.Redact)
		}
	}
	if o.LogLines > 0 && o.LogBytes > 0 {
		tty := info.Config != nil && info.Config.Tty
		ev.Logs, ev.LogsTruncated, err = c.lastLines(ctx, info.ID, tty, o)
		if err != nil {
			ev.LogsError = err.Error()
		}
		ev.Logs = redact(ev.Logs, o.Redact)
	}
	return ev, nil
}

// lastLines reads the container's last o.LogLines lines, keeping the
// newest o.LogBytes of them whatever the daemon sends.
func (c *Client) lastLines(ctx context.Context, id string, tty bool, o EvidenceOptions) (string, bool, error) {
	rc, err := c.api.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true,
		Tail: strconv.Itoa(o.LogLines)})
	if err != nil {
		return "", false, fmt.Errorf("read the logs of %s: %w", id[:min(12, len(id))], err)
	}
	defer rc.Close()
	last := tail.New(o.LogBytes)
	if tty {
		_, err = io.Copy(last, rc)
	} else {
		_, err = stdcopy.StdCopy(last, last, rc)
	}
	if err != nil {
		err = fmt.Errorf("read the logs of %s: %w", id[:min(12, len(id))], err)
	}
	return last.String(), last.Dropped(), err
}

func redact(s string, patterns []*regexp.Regexp) string {
	for _, re := range patterns {
		if re.NumSubexp() == 0 {
			s = re.ReplaceAllLiteralString(s, "[REDACTED]")
			continue
		}
		var b strings.Builder
		last := 0
		for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
			if m[2] < 0 {
				continue
			}
			b.WriteString(s[last:m[2]])
			b.WriteString("[REDACTED]")
			last = m[3]
		}
		b.WriteString(s[last:])
		s = b.String()
	}
	return s
}

func parseDockerTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 2 {
		return time.Time{}
	}
	return t
}
