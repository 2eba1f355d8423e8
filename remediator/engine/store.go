package engine

// This file is where the engine meets the store: the one file of the
// engine that imports it. Everything else speaks the model's types through
// the interfaces below and Claim, Round and StateReader, so the pure core
// is tested without a database (fakeStore, scriptedClaim).

import (
	"context"
	"time"

	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

// Store is the database the engine works from.
type Store interface {
	ClaimJob(ctx context.Context, f model.ClaimFilter) (*store.Claim, error)
	ClaimRound(ctx context.Context, f model.ClaimFilter, remediations []string, n int) (*store.Round, error)
	Heartbeat(ctx context.Context, r model.Replica, alive time.Duration) (same, other int, err error)
	ApplyRetention(ctx context.Context) (map[string]int64, error)
	JobCounts(ctx context.Context) (map[string]int64, error)
	DueReverts(ctx context.Context, node, owner string) ([]model.PendingRevert, error)
	MarkReverted(ctx context.Context, p model.PendingRevert, revertErr error) error
	CriticalEvents(ctx context.Context, window time.Duration) (int, error)
	RaiseOwnAlert(ctx context.Context, fp string, reopenAfter time.Duration, next func(since time.Time, firing bool) *model.Alert) (model.IngestResult, error)
	IngestAlerts(ctx context.Context, alerts []model.Alert, reopenAfter time.Duration) (model.IngestResult, error)
	IngestAndClaim(ctx context.Context, alerts []model.Alert, reopenAfter time.Duration, f model.ClaimFilter, gate func() error) (*store.Claim, model.IngestResult, error)
	NodeHeartbeat(ctx context.Context, b model.NodeBeat) (refused []string, err error)
	NodeStopped(ctx context.Context, name, engine string) error
	ListenForJobs(ctx context.Context, node string, wake func()) error
	ReleaseLeases(ctx context.Context, owner string) (int, error)
	NextDue(ctx context.Context, nodes []string) (time.Time, bool, error)
}

var (
	_ Store       = (*store.Store)(nil)
	_ Claim       = (*store.Claim)(nil)
	_ Round       = (*store.Round)(nil)
	_ StateReader = (*store.Store)(nil)
)

// claimFromStore claims through the Store, as a Claim.
func (e *Engine) claimFromStore(ctx context.Context, f model.ClaimFilter) (Claim, error) {
	c, err := e.store.ClaimJob(ctx, f)
	if c == nil { // no job: a nil *store.Claim must not become a non-nil Claim
		return nil, err
	}
	return c, err
}

// ingestAndClaimFromStore stores and claims through the Store, as a Claim.
func (e *Engine) ingestAndClaimFromStore(ctx context.Context, alerts []model.Alert, reopenAfter time.Duration, f model.ClaimFilter, gate func() error) (Claim, error) {
	c, _, err := e.store.IngestAndClaim(ctx, alerts, reopenAfter, f, gate)
	if c == nil { // no job: a nil *store.Claim must not become a non-nil Claim
		return nil, err
	}
	return c, err
}

// claimRoundFromStore claims through the Store, as a Round.
func (e *Engine) claimRoundFromStore(ctx context.Context, f model.ClaimFilter, remediations []string, n int) (Round, error) {
	r, err := e.store.ClaimRound(ctx, f, remediations, n)
	if r == nil { // no job: a nil *store.Round must not become a non-nil Round
		return nil, err
	}
	return r, err
}
