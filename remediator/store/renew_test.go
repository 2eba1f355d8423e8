package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"
)

// TestRenewWhileFinishing: the engine renews an action's lease from a
// goroutine of its own until the outcome is recorded, so renewals run
// while Finish does and after it. None may fail, report a takeover or
// crash: the outcome being the claim's own, there is nothing left to
// renew. (A renewal racing Finish once dereferenced the finished action:
// a nil pointer that stopped selfheal. make test-race runs this test under
// the race detector.)
func TestRenewWhileFinishing(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	for i := range 20 {
		a := alert("firing")
		a.Fingerprint = fmt.Sprintf("%016x", 0xc0+i)
		if _, err := s.IngestAlerts(ctx, []model.Alert{a}, time.Hour); err != nil {
			t.Fatal(err)
		}
		c := claimAll(t, s, 1)[0]
		adm, err := c.RecordIntent(ctx, model.Intent{Target: "llm", Action: "restart", Category: "A", Attempt: 1,
			Owner: "replica-a", Lease: time.Minute, Timeout: time.Minute})
		if err != nil || adm.ActionID == 0 {
			t.Fatalf("intent: %+v, %v", adm, err)
		}
		var renewing sync.WaitGroup
		stop := make(chan struct{})
		var errs []error
		renewing.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A short deadline makes some renewals fail with an error
				// of their own, as a slow database would.
				rctx, cancel := context.WithTimeout(ctx, time.Duration(i%4)*time.Millisecond)
				_, err := c.Renew(rctx, time.Minute)
				cancel()
				if err != nil && rctx.Err() == nil {
					errs = append(errs, err)
				}
			}
		})
		time.Sleep(5 * time.Millisecond)
		if err := c.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeSucceeded, Target: "llm",
			ActionID: adm.ActionID, ActionStatus: model.ActionSucceeded}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		close(stop)
		renewing.Wait()
		if _, err := c.Renew(ctx, time.Minute); err != nil {
			errs = append(errs, err)
		}
		for _, err := range errs {
			t.Errorf("renewal %d, while or after the outcome was recorded: %v", i, err)
		}
		c.Release()
	}
}
