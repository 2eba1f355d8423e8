package action_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
)

// Within a look, a key is read once, by whichever check asks first, and
// every check shares what it read; without one, each check reads.
func TestLookedReadsOnce(t *testing.T) {
	var reads atomic.Int32
	release := make(chan struct{})
	read := func() (int, error) {
		reads.Add(1)
		<-release
		return 7, nil
	}
	ctx := action.WithLook(context.Background())
	var wg sync.WaitGroup
	got := make([]int, 8)
	for i := range got {
		wg.Go(func() {
			v, err := action.Looked(ctx, "container/llm", read)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	time.Sleep(20 * time.Millisecond) // the checks wait on the first read
	close(release)
	wg.Wait()
	if v, _ := action.Looked(ctx, "container/llm", read); v != 7 {
		t.Errorf("a later check got %d", v)
	}
	for i, v := range got {
		if v != 7 {
			t.Errorf("check %d got %d, want 7", i, v)
		}
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("%d reads in one look, want 1", n)
	}
	if _, err := action.Looked(ctx, "container/other", read); err != nil || reads.Load() != 2 {
		t.Errorf("another key: %v after %d reads, want a read of its own", err, reads.Load())
	}
	for range 2 {
		if _, err := action.Looked(context.Background(), "container/llm", read); err != nil {
			t.Fatal(err)
		}
	}
	if n := reads.Load(); n != 4 {
		t.Errorf("%d reads, want 4: without a look every check reads", n)
	}
}

// A read is shared for LookFor, not longer: an action's later step reads
// afresh.
func TestLookedReadsAgainAfterLookFor(t *testing.T) {
	t.Parallel()
	ctx := action.WithLook(context.Background())
	var reads int
	read := func() (int, error) { reads++; return reads, nil }
	if v, _ := action.Looked(ctx, "a", read); v != 1 {
		t.Fatalf("first read %d", v)
	}
	time.Sleep(action.LookFor + 50*time.Millisecond)
	if v, _ := action.Looked(ctx, "a", read); v != 2 {
		t.Errorf("after LookFor: %d, want a read of its own (2)", v)
	}
}

// An error is part of the view: the checks share it. A read cut short by
// its context is not: a later check reads again.
func TestLookedSharesErrorsNotCancellations(t *testing.T) {
	ctx := action.WithLook(context.Background())
	gone := errors.New("no such container")
	var reads int
	failing := func() (string, error) { reads++; return "", gone }
	for range 2 {
		if _, err := action.Looked(ctx, "a", failing); !errors.Is(err, gone) {
			t.Fatalf("err %v, want %v", err, gone)
		}
	}
	if reads != 1 {
		t.Errorf("%d reads of a failing key, want 1", reads)
	}
	cut, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := action.Looked(cut, "b", func() (string, error) { reads++; return "", cut.Err() }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if v, err := action.Looked(ctx, "b", func() (string, error) { reads++; return "up", nil }); err != nil || v != "up" {
		t.Errorf("after a cancelled read: %q, %v; want a read of its own", v, err)
	}
	if reads != 3 {
		t.Errorf("%d reads, want 3", reads)
	}

	// A check waiting on a read that is then cut short reads for itself.
	started, release := make(chan struct{}), make(chan struct{})
	cut, cancel = context.WithCancel(ctx)
	go func() {
		_, _ = action.Looked(cut, "c", func() (string, error) {
			close(started)
			<-release
			return "", cut.Err()
		})
	}()
	<-started
	waited := make(chan string)
	go func() {
		v, _ := action.Looked(ctx, "c", func() (string, error) { return "read again", nil })
		waited <- v
	}()
	time.Sleep(20 * time.Millisecond) // the second check waits on the first read
	cancel()
	close(release)
	if v := <-waited; v != "read again" {
		t.Errorf("a check that waited on a cancelled read got %q, want its own read", v)
	}
}
