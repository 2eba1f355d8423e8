package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"

	"github.com/selfheal/selfheal/internal/labelset"
)

// Message is Alertmanager's webhook payload, version 4.
type Message struct {
	*template.Data
	Version         string `json:"version"`
	GroupKey        string `json:"groupKey"`
	TruncatedAlerts uint64 `json:"truncatedAlerts"`
}

// ErrBadPayload marks a body that is not a usable version 4 payload.
var ErrBadPayload = errors.New("bad payload")

func badPayload(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadPayload, fmt.Sprintf(format, args...))
}

// Decode reads one payload and checks what selfheal relies on: version 4,
// a known status on the payload and on every alert, an alertname and a
// start time on every alert. A fingerprint that is not Alertmanager's (16
// hex digits) — missing, or anything a client made up — is computed from
// the labels the way Alertmanager does, so hand-made payloads work too and
// no fingerprint is ever too long to index. Unknown
// fields are allowed: newer Alertmanagers add some.
func Decode(r io.Reader) (*Message, error) {
	var m Message
	dec := json.NewDecoder(r)
	if err := dec.Decode(&m); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, badPayload("invalid JSON: %v", err)
	}
	if dec.More() {
		return nil, badPayload("trailing data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, badPayload("trailing data after the JSON object")
	}
	if m.Version != "4" {
		return nil, badPayload("version %q is not supported (want \"4\")", m.Version)
	}
	if m.Data == nil || m.Alerts == nil {
		return nil, badPayload("no alerts")
	}
	if !validStatus(m.Status) {
		return nil, badPayload("status %q is neither firing nor resolved", m.Status)
	}
	for i := range m.Alerts {
		a := &m.Alerts[i]
		if !validStatus(a.Status) {
			return nil, badPayload("alerts[%d]: status %q is neither firing nor resolved", i, a.Status)
		}
		if a.Labels[model.AlertNameLabel] == "" {
			return nil, badPayload("alerts[%d]: no alertname label", i)
		}
		if a.StartsAt.IsZero() {
			return nil, badPayload("alerts[%d]: no startsAt", i)
		}
		if !validFingerprint(a.Fingerprint) {
			a.Fingerprint = fingerprint(a.Labels)
		}
	}
	return &m, nil
}

func validFingerprint(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func validStatus(s string) bool {
	return s == string(model.AlertFiring) || s == string(model.AlertResolved)
}

func fingerprint(kv template.KV) string { return labelset.Fingerprint(kv) }

// occurrenceStart is the start time that identifies an occurrence.
// Alertmanager sends startsAt with nanoseconds while an alert fires and
// with milliseconds once it resolves; truncating makes both the same key.
func occurrenceStart(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }
