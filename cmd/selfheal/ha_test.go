package main

// PostgreSQL high availability: a primary with a synchronous standby, and
// selfheal on a multi-host database URL (target_session_attrs=read-write).

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// TestPrimaryLostDuringABurst: the primary dies (every process killed at
// once) while alerts are being delivered, and the synchronous standby is
// promoted. Every alert selfheal answered 200 is on the new primary; the
// others were answered 503 (Alertmanager retries them) and are stored by
// a retry; selfheal serves again with no restart.
func TestPrimaryLostDuringABurst(t *testing.T) {
	t.Parallel()
	primary, standby := pgtest.NewReplicated(t)
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write",
		primary.Port(), standby.Port())
	config := writeFile(t, "selfheal.yml", faultConfig)
	addr := freeAddr(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=" + benchToken}
	daemon(t, env, config, addr, "--no-exporter", "--log.level=debug")
	url := "http://" + addr

	// Four senders deliver distinct alerts, each retried until answered 200,
	// as Alertmanager does.
	var mu sync.Mutex
	var answered []string // fingerprints answered 200
	failures := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				prefix := fmt.Sprintf("ha-%d-%d", w, i)
				body := alerts("Burst", prefix, []string{"svc"}, time.Now(), 1)
				for {
					err := postAlerts(url, body)
					if err == nil {
						mu.Lock()
						answered = append(answered, fmt.Sprintf("%016x", benchFingerprint(prefix, 0)))
						mu.Unlock()
						break
					}
					mu.Lock()
					failures++
					mu.Unlock()
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(answered)
	}
	dockertest.WaitFor(t, 20*time.Second, "deliveries before the crash", func() bool { return count() >= 50 })
	primary.Crash()
	before := count()
	time.Sleep(time.Second) // the outage: deliveries are answered 503 meanwhile
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	dockertest.WaitFor(t, 30*time.Second, "deliveries after the promotion", func() bool { return count() >= before+50 })
	close(stop)
	wg.Wait()

	conn := connect(t, strings.Replace(dsn, fmt.Sprintf("127.0.0.1:%d,", primary.Port()), "", 1))
	missing := 0
	for _, fp := range answered {
		if queryInt(t, conn, `SELECT count(*) FROM alert_occurrences WHERE fingerprint = $1`, fp) != 1 {
			missing++
		}
	}
	t.Logf("%d deliveries answered 200 (%d before the crash), %d answered otherwise and retried", len(answered), before, failures)
	if missing > 0 {
		t.Fatalf("%d of %d alerts answered 200 are not on the new primary", missing, len(answered))
	}
	if failures == 0 {
		t.Fatal("no delivery failed: the primary's loss was not seen, and the test proves nothing")
	}
	waitReady(t, "selfheal on the new primary", url+"/-/ready")
	dockertest.WaitFor(t, 25*time.Second, "the engine's heartbeat on the new primary", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM nodes WHERE last_heartbeat > $1`, promoted) == 1
	})
}
