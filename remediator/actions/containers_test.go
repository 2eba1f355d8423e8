package actions

import (
	"context"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/containers"
)

type fakeContainers struct {
	up      bool
	started time.Time
}

func (f fakeContainers) Ping(context.Context) error { return nil }
func (f fakeContainers) Canonical(_ context.Context, n string) (string, error) {
	return n, nil
}
func (f fakeContainers) Permit(context.Context, string) error { return nil }
func (f fakeContainers) Restart(context.Context, string) (time.Time, error) {
	return time.Time{}, nil
}
func (f fakeContainers) StopStart(context.Context, string, time.Duration) (time.Time, error) {
	return time.Time{}, nil
}
func (f fakeContainers) Verify(context.Context, string, time.Time, containers.Verification) error {
	return nil
}
func (f fakeContainers) Running(context.Context, string) (bool, time.Time, error) {
	return f.up, f.started, nil
}

func TestRecovered(t *testing.T) {
	t.Parallel()
	alert := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	now := alert.Add(time.Minute)
	for _, tc := range []struct {
		name      string
		c         fakeContainers
		recovered bool
		settling  time.Duration
	}{
		{"still down", fakeContainers{up: false, started: alert.Add(10 * time.Second)}, false, 0},
		{"up since before the alert", fakeContainers{up: true, started: alert.Add(-time.Hour)}, false, 0},
		{"up since the alert, stable", fakeContainers{up: true, started: alert.Add(10 * time.Second)}, true, 0},
		{"up since 1s ago", fakeContainers{up: true, started: now.Add(-time.Second)}, false, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := recovered(context.Background(), tc.c, "llm", alert, 3*time.Second, now)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Recovered != tc.recovered || rec.Settling != tc.settling {
				t.Fatalf("%+v", rec)
			}
		})
	}
}
