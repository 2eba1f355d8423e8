package webhook

// The webhook over a real PostgreSQL: what a client may send that the
// database can never store must not be answered 5xx (Alertmanager would
// retry the same body for ever, and the rest of its group would never be
// stored). Only a database that is down is a 503.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Template(store.MigrateURL))) }

// realHandler serves the webhook over a fresh, migrated database.
func realHandler(t testing.TB) (*Handler, *pgx.Conn) {
	t.Helper()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	h := New(Options{
		Credentials:    Credentials{BearerToken: "tok"},
		MaxBodyBytes:   1 << 20,
		PersistTimeout: 5 * time.Second,
		Match: func(l map[string]string) string {
			if l["alertname"] == "ServiceDown" {
				return "service-down"
			}
			return ""
		},
		Store:  st,
		Logger: slog.New(slog.DiscardHandler),
	})
	return h, conn
}

func count(t testing.TB, conn *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// group builds a delivery of n ServiceDown alerts; change edits alert i.
func group(n int, change func(i int, a map[string]any)) []byte {
	var alerts []map[string]any
	for i := range n {
		a := map[string]any{
			"status":       "firing",
			"labels":       map[string]string{"alertname": "ServiceDown", "service": fmt.Sprintf("svc-%d", i), "category": "A"},
			"annotations":  map[string]string{"summary": "down"},
			"startsAt":     "2026-11-27T03:00:00.123456789Z",
			"endsAt":       "0001-01-01T00:00:00Z",
			"generatorURL": "http://prometheus/graph",
			"fingerprint":  fmt.Sprintf("%016x", i+1),
		}
		if change != nil {
			change(i, a)
		}
		alerts = append(alerts, a)
	}
	b, _ := json.Marshal(map[string]any{
		"version": "4", "status": "firing", "receiver": "selfheal", "groupKey": "{}:{alertname=\"ServiceDown\"}",
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "http://am", "alerts": alerts,
	})
	return b
}

// TestNULByteRejectsOnlyItsAlert: one alert of a hundred with a NUL byte
// in a label is rejected, with the reason in the answer and in an event;
// the ninety-nine others are stored and queued.
func TestNULByteRejectsOnlyItsAlert(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"label value", "label name", "annotation", "generatorURL", "alertname"} {
		t.Run(where, func(t *testing.T) {
			h, conn := realHandler(t)
			body := group(100, func(i int, a map[string]any) {
				if i != 42 {
					return
				}
				l := a["labels"].(map[string]string)
				switch where {
				case "label value":
					l["service"] = "svc\x00x"
				case "label name":
					l["bad\x00"] = "x"
				case "annotation":
					a["annotations"] = map[string]string{"summary": "a\x00b"}
				case "generatorURL":
					a["generatorURL"] = "http://x/\x00"
				case "alertname":
					l["alertname"] = "Service\x00Down"
				}
			})
			w := post(h, body, bearer("tok"))
			if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"rejected":[{"index":42`) {
				t.Fatalf("answered %d %s", w.Code, w.Body)
			}
			if n := count(t, conn, `SELECT count(*) FROM alert_occurrences`); n != 99 {
				t.Errorf("%d alerts stored, want 99", n)
			}
			if n := count(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 99 {
				t.Errorf("%d jobs queued, want 99", n)
			}
			if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_rejected'
				AND details->'rejected'->0->>'index' = '42'`); n != 1 {
				t.Errorf("%d alert_rejected events, want 1", n)
			}
		})
	}
}

// TestClientFingerprintsAreNotTrusted: a fingerprint that is not 16 hex
// digits — 100 kB of it, or one with a NUL byte — is recomputed from the
// labels; the alert is stored.
func TestClientFingerprintsAreNotTrusted(t *testing.T) {
	t.Parallel()
	h, conn := realHandler(t)
	body := group(2, func(i int, a map[string]any) {
		a["fingerprint"] = []string{strings.Repeat("f", 100<<10), "abc\x00"}[i]
	})
	if w := post(h, body, bearer("tok")); w.Code != http.StatusOK {
		t.Fatalf("answered %d %s", w.Code, w.Body)
	}
	if n := count(t, conn, `SELECT count(*) FROM alert_occurrences WHERE length(fingerprint) = 16`); n != 2 {
		t.Fatalf("%d alerts stored with a computed fingerprint, want 2", n)
	}
}

// TestNothingStorableIsBadRequest: a delivery none of whose alerts can be
// stored is a 400, never a 5xx.
func TestNothingStorableIsBadRequest(t *testing.T) {
	t.Parallel()
	h, conn := realHandler(t)
	body := group(3, func(i int, a map[string]any) { a["labels"].(map[string]string)["x"] = "\x00" })
	if w := post(h, body, bearer("tok")); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "NUL byte") {
		t.Fatalf("answered %d %s", w.Code, w.Body)
	}
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_rejected'`); n != 1 {
		t.Errorf("%d alert_rejected events, want 1", n)
	}
}

// FuzzWebhookToStore sends arbitrary bodies through the whole webhook →
// store path on a real PostgreSQL (its seed corpus runs in make test):
// whatever the body, the answer is never a 5xx while the database is up.
func FuzzWebhookToStore(f *testing.F) {
	for _, name := range []string{"service-down-firing.json", "service-down-resolved.json", "disk-critical-group-of-3.json", "gpu-temperature-firing.json"} {
		f.Add(fixture(f, name))
	}
	f.Add(group(3, func(i int, a map[string]any) { a["labels"].(map[string]string)["service"] = "\x00" }))
	f.Add(group(2, func(i int, a map[string]any) { a["fingerprint"] = strings.Repeat("z", 3000) }))
	f.Add(group(1, func(i int, a map[string]any) { a["annotations"] = map[string]string{"\x00": "\x00"} }))
	f.Add(group(1, func(i int, a map[string]any) { a["startsAt"] = "9999-12-31T23:59:59Z" }))
	f.Add(group(1, func(i int, a map[string]any) { a["startsAt"] = "0001-01-01T00:00:01Z" }))
	f.Add(group(1, func(i int, a map[string]any) {
		a["labels"].(map[string]string)["service"] = strings.Repeat("é", 20000)
	}))
	f.Add([]byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A\u0000"},"startsAt":"2026-11-27T03:00:00Z"}]}`))
	f.Add([]byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-11-27T03:00:00Z","endsAt":"-0001-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":"4"`))
	h, _ := realHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		if w := post(h, body, bearer("tok")); w.Code >= 500 {
			t.Fatalf("answered %d %s to %q", w.Code, w.Body, body)
		}
	})
}

// TestLabelPastAnIndexIsRejected: a label longer than an index can hold —
// a 3,000-character service, which the job would fail on at every try —
// is rejected at the webhook with the reason; nothing is queued for it,
// and the rest of the delivery is stored.
func TestLabelPastAnIndexIsRejected(t *testing.T) {
	t.Parallel()
	h, conn := realHandler(t)
	body := group(3, func(i int, a map[string]any) {
		if i == 1 {
			a["labels"].(map[string]string)["service"] = strings.Repeat("s", 3000)
		}
	})
	w := post(h, body, bearer("tok"))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"index":1`) || !strings.Contains(w.Body.String(), "3000 bytes long") {
		t.Fatalf("answered %d %s", w.Code, w.Body)
	}
	if n := count(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 2 {
		t.Errorf("%d jobs queued, want 2: none for the long label", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM alert_occurrences WHERE length(labels->>'service') > 1024`); n != 0 {
		t.Errorf("the alert with the long label was stored")
	}
}

// TestBigGroupIsNeverA503: a delivery of 10,000 alerts (under the default
// body limit), delivered and then re-delivered three times — as
// Alertmanager re-sends a group — is stored within persist_timeout grown
// by the delivery's size: 200 every time. The base is far tighter than the
// default (which a quiet machine meets for such a group without growing)
// so that the growth is what the test sees.
//
// Not parallel: it measures the time a big delivery takes to store, which
// the other tests of the package would only add to.
func TestBigGroupIsNeverA503(t *testing.T) {
	h, conn := realHandler(t)
	h.o.PersistTimeout = policy.DefaultPersistTimeout / 15
	// As small as Alertmanager's alerts get, so that 10,000 fit in the
	// body limit (the fingerprints are computed).
	var alerts []string
	for i := range 10000 {
		alerts = append(alerts, fmt.Sprintf(`{"status":"firing","labels":{"alertname":"ServiceDown","i":"%d"},"startsAt":"2026-11-27T03:00:00Z"}`, i))
	}
	body := []byte(`{"version":"4","status":"firing","groupKey":"{}:{alertname=\"ServiceDown\"}","alerts":[` + strings.Join(alerts, ",") + `]}`)
	if len(body) > 1<<20 {
		t.Fatalf("the delivery is %d bytes, over the default body limit", len(body))
	}
	for i := range 4 {
		started := time.Now()
		if w := post(h, body, bearer("tok")); w.Code != http.StatusOK {
			t.Fatalf("delivery %d: answered %d %s after %s", i, w.Code, w.Body, time.Since(started))
		}
		t.Logf("delivery %d: %s (timeout %s)", i, time.Since(started).Round(time.Millisecond), PersistTimeout(h.o.PersistTimeout, 10000))
	}
	if n := count(t, conn, `SELECT count(*) FROM alert_occurrences WHERE deliveries = 4`); n != 10000 {
		t.Fatalf("%d alerts stored four times, want 10000", n)
	}
}

// TestConcurrentDeliveriesAnswerForThemselves: forty deliveries at once,
// stored in commits they share, are each answered with their own jobs
// queued; the same alert delivered by several of them counts every
// delivery, as if each had its own commit.
func TestConcurrentDeliveriesAnswerForThemselves(t *testing.T) {
	t.Parallel()
	h, conn := realHandler(t)
	const deliveries = 40
	answers := make([]string, deliveries)
	var wg sync.WaitGroup
	for d := range deliveries {
		wg.Go(func() {
			// Delivery d carries d%4+1 alerts of its own, ServiceDown (a
			// job each) when d is even, and one alert every delivery carries.
			body := group(d%4+2, func(i int, a map[string]any) {
				if i == 0 {
					a["fingerprint"] = "00000000000000aa"
					a["labels"] = map[string]string{"alertname": "Shared", "service": "shared"}
					return
				}
				a["fingerprint"] = fmt.Sprintf("%08x%08x", d+1, i)
				if d%2 == 1 {
					a["labels"].(map[string]string)["alertname"] = "Other"
				}
			})
			w := post(h, body, bearer("tok"))
			answers[d] = fmt.Sprintf("%d %s", w.Code, strings.TrimSpace(w.Body.String()))
		})
	}
	wg.Wait()
	for d, got := range answers {
		queued := 0
		if d%2 == 0 {
			queued = d%4 + 1
		}
		want := fmt.Sprintf(`200 {"status":"success","alerts":%d,"jobsQueued":%d,"jobsCancelled":0}`, d%4+2, queued)
		if got != want {
			t.Errorf("delivery %d answered %s, want %s", d, got, want)
		}
	}
	if n := count(t, conn, `SELECT deliveries FROM alert_occurrences WHERE fingerprint = '00000000000000aa'`); n != deliveries {
		t.Errorf("the shared alert counts %d deliveries, want %d", n, deliveries)
	}
	if n := count(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 10*1+10*3 {
		t.Errorf("%d jobs, want 40: one or three for each even delivery", n)
	}
}
