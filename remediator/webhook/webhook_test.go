package webhook

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeStore struct {
	got [][]model.Alert
	err error
}

func (f *fakeStore) IngestDeliveries(_ context.Context, ds [][]model.Alert, _ time.Duration) ([]model.IngestResult, error) {
	if f.err != nil {
		return nil, f.err
	}
	res := make([]model.IngestResult, len(ds))
	for i, a := range ds {
		f.got = append(f.got, a)
		res[i] = model.IngestResult{JobsQueued: len(a)}
	}
	return res, nil
}

func (f *fakeStore) RecordEvent(context.Context, model.Event) error { return f.err }

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newHandler(fs *fakeStore, creds Credentials, reg prometheus.Registerer) *Handler {
	return New(Options{
		Credentials:    creds,
		MaxBodyBytes:   4096,
		PersistTimeout: time.Second,
		Match: func(l map[string]string) string {
			if l["alertname"] == "ServiceDown" {
				return "service-down"
			}
			return ""
		},
		Store:      fs,
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: reg,
	})
}

func post(h http.Handler, body []byte, auth func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/webhook", bytes.NewReader(body))
	if auth != nil {
		auth(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func TestStatusCodes(t *testing.T) {
	t.Parallel()
	firing := fixture(t, "service-down-firing.json")
	big := append(bytes.Repeat([]byte(" "), 5000), firing...)
	for _, tc := range []struct {
		name  string
		body  []byte
		auth  func(*http.Request)
		err   error
		code  int
		inMsg string
	}{
		{"ok", firing, bearer("s3cret-token"), nil, 200, ""},
		{"no credentials", firing, nil, nil, 401, "missing or wrong credentials"},
		{"wrong token", firing, bearer("s3cret-tokeN"), nil, 401, "missing or wrong credentials"},
		{"basic instead of bearer", firing, func(r *http.Request) { r.SetBasicAuth("u", "s3cret-token") }, nil, 401, ""},
		{"malformed JSON", []byte(`{"version":"4",`), bearer("s3cret-token"), nil, 400, "invalid JSON"},
		{"wrong version", bytes.Replace(firing, []byte(`"version":"4"`), []byte(`"version":"3"`), 1), bearer("s3cret-token"), nil, 400, `version "3" is not supported`},
		{"not an object", []byte(`[1,2]`), bearer("s3cret-token"), nil, 400, "invalid JSON"},
		{"trailing garbage", append(append([]byte{}, firing...), []byte(`{}`)...), bearer("s3cret-token"), nil, 400, "trailing data"},
		{"over the limit", big, bearer("s3cret-token"), nil, 413, "body larger than 4096 bytes"},
		{"database down", firing, bearer("s3cret-token"), errors.New("connection refused"), 503, "retry later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeStore{err: tc.err}
			reg := prometheus.NewPedanticRegistry()
			h := newHandler(fs, Credentials{BearerToken: "s3cret-token"}, reg)
			w := post(h, tc.body, tc.auth)
			if w.Code != tc.code {
				t.Fatalf("code = %d (%s), want %d", w.Code, w.Body, tc.code)
			}
			if !strings.Contains(w.Body.String(), tc.inMsg) {
				t.Errorf("body %q does not mention %q", w.Body, tc.inMsg)
			}
			if tc.code == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without a challenge")
			}
			if tc.code != 200 && len(fs.got) != 0 {
				t.Error("rejected delivery was persisted")
			}
			if got := testutil.ToFloat64(h.requests.WithLabelValues(strconv.Itoa(tc.code))); got != 1 {
				t.Errorf("requests{code=%d} = %v", tc.code, got)
			}
		})
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	firing := fixture(t, "service-down-firing.json")
	h := newHandler(&fakeStore{}, Credentials{Username: "am", Password: "pw"}, nil)
	for _, tc := range []struct {
		user, pass string
		code       int
	}{{"am", "pw", 200}, {"am", "px", 401}, {"xx", "pw", 401}, {"", "", 401}} {
		w := post(h, firing, func(r *http.Request) { r.SetBasicAuth(tc.user, tc.pass) })
		if w.Code != tc.code {
			t.Errorf("%s:%s → %d, want %d", tc.user, tc.pass, w.Code, tc.code)
		}
	}
}

func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	h := newHandler(&fakeStore{}, Credentials{}, nil)
	r := httptest.NewRequest(http.MethodGet, "/api/v1/webhook", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 405 || w.Header().Get("Allow") != "POST" {
		t.Fatalf("GET → %d %v", w.Code, w.Header())
	}
}

func TestFixturesPersistEveryAlert(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file   string
		alerts int
		status string
		rem    string
	}{
		{"service-down-firing.json", 1, "firing", "service-down"},
		{"service-down-resolved.json", 1, "resolved", "service-down"},
		{"disk-critical-group-of-3.json", 3, "firing", ""},
		{"gpu-temperature-firing.json", 1, "firing", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			fs := &fakeStore{}
			h := newHandler(fs, Credentials{}, nil)
			if w := post(h, fixture(t, tc.file), nil); w.Code != 200 {
				t.Fatalf("code %d: %s", w.Code, w.Body)
			}
			if len(fs.got) != 1 || len(fs.got[0]) != tc.alerts {
				t.Fatalf("persisted %v", fs.got)
			}
			for _, a := range fs.got[0] {
				if a.Status != tc.status || a.Remediation != tc.rem || a.Fingerprint == "" || a.Alertname == "" {
					t.Errorf("alert %+v", a)
				}
				if a.StartsAt.Nanosecond()%int(time.Millisecond) != 0 {
					t.Errorf("startsAt %v not truncated to milliseconds", a.StartsAt)
				}
			}
		})
	}
}

// The firing and the resolved delivery of one alert carry startsAt with
// different precision; both must name the same occurrence.
func TestFiringAndResolvedShareOccurrenceKey(t *testing.T) {
	t.Parallel()
	fs := &fakeStore{}
	h := newHandler(fs, Credentials{}, nil)
	post(h, fixture(t, "service-down-firing.json"), nil)
	post(h, fixture(t, "service-down-resolved.json"), nil)
	f, r := fs.got[0][0], fs.got[1][0]
	if f.Fingerprint != r.Fingerprint || !f.StartsAt.Equal(r.StartsAt) {
		t.Fatalf("firing %s@%v, resolved %s@%v", f.Fingerprint, f.StartsAt, r.Fingerprint, r.StartsAt)
	}
	if r.EndsAt.IsZero() {
		t.Error("resolved alert lost its endsAt")
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"empty":              ``,
		"null":               `null`,
		"no alerts":          `{"version":"4","status":"firing"}`,
		"bad status":         `{"version":"4","status":"burning","alerts":[]}`,
		"bad alert status":   `{"version":"4","status":"firing","alerts":[{"status":"x","labels":{"alertname":"A"},"startsAt":"2026-01-01T00:00:00Z"}]}`,
		"no alertname":       `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"2026-01-01T00:00:00Z"}]}`,
		"no startsAt":        `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"}}]}`,
		"labels not strings": `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":1}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(strings.NewReader(body)); !errors.Is(err, ErrBadPayload) {
				t.Fatalf("Decode = %v, want ErrBadPayload", err)
			}
		})
	}
}

func TestDecodeComputesMissingFingerprint(t *testing.T) {
	t.Parallel()
	m, err := Decode(strings.NewReader(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A","x":"y"},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	// The value Alertmanager itself computes for {alertname="A", x="y"}.
	if got := m.Alerts[0].Fingerprint; got != fingerprint(map[string]string{"x": "y", "alertname": "A"}) || len(got) != 16 {
		t.Fatalf("fingerprint %q", got)
	}
}

// FuzzDecode checks that no body makes Decode panic and that whatever it
// accepts satisfies what the rest of selfheal relies on. Its seeds are the
// real Alertmanager payloads; `go test` runs them every time.
func FuzzDecode(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			f.Add(fixture(f, e.Name()))
		}
	}
	f.Add([]byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(io.LimitReader(bytes.NewReader(body), 1<<20))
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("error not marked as a bad payload: %v", err)
			}
			return
		}
		if m.Version != "4" || !validStatus(m.Status) {
			t.Fatalf("accepted %q/%q", m.Version, m.Status)
		}
		for _, a := range m.Alerts {
			if !validStatus(a.Status) || a.Labels["alertname"] == "" || a.StartsAt.IsZero() || a.Fingerprint == "" {
				t.Fatalf("accepted alert %+v", a)
			}
		}
	})
}

// TestTokenFileWithTrailingSpace: a token file with stray whitespace around
// the token (as editors and `echo` leave it) accepts the token Alertmanager
// sends from the same file, trimmed the same way.
func TestTokenFileWithTrailingSpace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("s3cret \r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, warning, err := ReadSecretFile(path)
	if err != nil || tok != "s3cret" || warning != "" {
		t.Fatalf("ReadSecretFile = %q, %q, %v", tok, warning, err)
	}
	h := newHandler(&fakeStore{}, Credentials{BearerToken: tok}, nil)
	if w := post(h, fixture(t, "service-down-firing.json"), bearer("s3cret")); w.Code != 200 {
		t.Fatalf("the token from the same file: %d %s", w.Code, w.Body)
	}
	if w := post(h, fixture(t, "service-down-firing.json"), bearer("s3cret2")); w.Code != 401 {
		t.Fatalf("another token: %d", w.Code)
	}
}

// pickyStore refuses, as PostgreSQL would, any batch holding the alert for
// service "bad"; it is down when down is set.
type pickyStore struct {
	stored []model.Alert
	down   bool
}

func (p *pickyStore) IngestDeliveries(_ context.Context, ds [][]model.Alert, _ time.Duration) ([]model.IngestResult, error) {
	if p.down {
		return nil, errors.New("dial tcp: connection refused")
	}
	for _, a := range ds {
		for _, x := range a {
			if x.Labels["service"] == "bad" {
				return nil, &pgconn.PgError{Code: "54000", Message: "index row size exceeds btree maximum"}
			}
		}
	}
	res := make([]model.IngestResult, len(ds))
	for i, a := range ds {
		p.stored = append(p.stored, a...)
		res[i] = model.IngestResult{JobsQueued: len(a)}
	}
	return res, nil
}

func (p *pickyStore) RecordEvent(context.Context, model.Event) error { return nil }

// TestUnstorableDataFoundOneByOne: when the database refuses a batch for
// its data (SQLSTATE class 22 or 54), the alerts are stored one at a time:
// the one it refuses is rejected, the others kept, and the answer is 200;
// a database that is down is still a 503.
func TestUnstorableDataFoundOneByOne(t *testing.T) {
	t.Parallel()
	p := &pickyStore{}
	h := New(Options{Credentials: Credentials{BearerToken: "t"}, MaxBodyBytes: 1 << 20, PersistTimeout: time.Second,
		Match: func(map[string]string) string { return "" }, Store: p, Logger: slog.New(slog.DiscardHandler)})
	body := bytes.Replace(fixture(t, "disk-critical-group-of-3.json"), []byte(`"mountpoint":"/data"`), []byte(`"mountpoint":"/data","service":"bad"`), 1)
	w := post(h, body, bearer("t"))
	if w.Code != http.StatusOK || len(p.stored) != 2 || !strings.Contains(w.Body.String(), `"index":1`) {
		t.Fatalf("answered %d %s; stored %d", w.Code, w.Body, len(p.stored))
	}
	p.down = true
	if w := post(h, body, bearer("t")); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("database down: answered %d", w.Code)
	}
}
