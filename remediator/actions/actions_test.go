package actions

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Template(store.MigrateURL))) }

func TestHTTP(t *testing.T) {
	t.Parallel()
	var gotMethod, gotHeader string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotMethod, gotHeader = r.Method, r.Header.Get("X-Token")
		switch r.URL.Path {
		case "/cache/clear":
			w.WriteHeader(http.StatusNoContent)
		case "/slow":
			time.Sleep(time.Second)
		default:
			http.Error(w, "nope", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	a := HTTP{}
	req := action.Request{Target: "llm", Params: &HTTPParams{Method: "POST", URL: srv.URL + "/cache/clear", Headers: map[string]string{"X-Token": "k"}}}
	res, err := a.Execute(context.Background(), req)
	if err != nil || gotMethod != "POST" || gotHeader != "k" || res.Details["status"] != 204 {
		t.Fatalf("2xx: %v %v %s %s", res, err, gotMethod, gotHeader)
	}
	req.Params.(*HTTPParams).URL = srv.URL + "/broken"
	if _, err := a.Execute(context.Background(), req); err == nil || !strings.Contains(err.Error(), "500 Internal Server Error: nope") {
		t.Fatalf("500: %v", err)
	}
	req.Params.(*HTTPParams).URL = srv.URL + "/slow"
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := a.Execute(ctx, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
}

func TestVacuum(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	res, err := Vacuum{}.Execute(context.Background(), action.Request{Params: &VacuumParams{Databases: []string{dsn}}})
	if err != nil {
		t.Fatal(err)
	}
	dbs, _ := res.Details["databases"].([]any)
	if len(dbs) != 1 {
		t.Fatalf("details %v", res.Details)
	}
	d := dbs[0].(map[string]any)
	if secs, ok := d["seconds"].(float64); !ok || secs <= 0 || strings.Contains(d["database"].(string), "@") {
		t.Fatalf("details %v (no duration, or credentials recorded)", d)
	}
	_, err = Vacuum{}.Execute(context.Background(), action.Request{Params: &VacuumParams{
		Databases: []string{"postgres://nobody:secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=1"}}})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("unreachable database: %v", err)
	}
}

// TestLogCleanup runs over a temporary tree with the cases that must
// survive: a young file, a file that does not match, a file open for
// writing, a symbolic link to a file outside the root and one to a
// directory outside it.
func TestLogCleanup(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	outside := t.TempDir()
	old := time.Now().Add(-10 * 24 * time.Hour)
	write := func(path string, age time.Time) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("0123456789"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, age, age); err != nil {
			t.Fatal(err)
		}
		return path
	}
	oldLog := write(filepath.Join(root, "app.log.1"), old)
	nested := write(filepath.Join(root, "sub", "worker.log.3"), old)
	young := write(filepath.Join(root, "app.log.2"), time.Now().Add(-time.Hour))
	other := write(filepath.Join(root, "data.db"), old)
	writing := write(filepath.Join(root, "current.log.9"), old)
	reading := write(filepath.Join(root, "read.log.8"), old)
	outsideFile := write(filepath.Join(outside, "secret.log.1"), old)
	write(filepath.Join(outside, "dir", "deep.log.1"), old)
	if err := os.Symlink(outsideFile, filepath.Join(root, "link.log.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "dir"), filepath.Join(root, "linkdir")); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(writing, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(reading)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := os.Chtimes(writing, old, old); err != nil { // opening must not make it young
		t.Fatal(err)
	}

	a := LogCleanup{}
	req := action.Request{Params: &LogCleanupParams{Roots: []string{root},
		Patterns: []string{"*.log.*"}, OlderThan: action.Duration(7 * 24 * time.Hour)}}
	if err := a.Permit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	res, err := a.Execute(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for path, wantGone := range map[string]bool{
		oldLog: true, nested: true, reading: true,
		young: false, other: false, writing: false, outsideFile: false,
		filepath.Join(outside, "dir", "deep.log.1"): false,
		filepath.Join(root, "link.log.1"):           false,
	} {
		_, err := os.Lstat(path)
		if gone := errors.Is(err, os.ErrNotExist); gone != wantGone {
			t.Errorf("%s: gone = %v, want %v", path, gone, wantGone)
		}
	}
	if res.Details["files_removed"] != 3 || res.Details["bytes_reclaimed"] != int64(30) || res.Details["skipped_open_for_writing"] != 1 {
		t.Errorf("details %v", res.Details)
	}

	req.Params.(*LogCleanupParams).Roots = []string{filepath.Join(root, "missing")}
	if err := a.Permit(context.Background(), req); err == nil {
		t.Error("a missing root is not refused")
	}
}

func TestWritableFlags(t *testing.T) {
	t.Parallel()
	for info, want := range map[string]bool{
		"pos:\t0\nflags:\t0100000\nmnt_id:\t25\n": false, // O_RDONLY|O_LARGEFILE
		"pos:\t0\nflags:\t0102001\n":              true,  // O_WRONLY|O_APPEND|O_LARGEFILE
		"pos:\t0\nflags:\t02\n":                   true,  // O_RDWR
		"pos:\t0\n":                               false,
	} {
		if got := writable(info); got != want {
			t.Errorf("writable(%q) = %v", info, got)
		}
	}
}

func TestSystemRoot(t *testing.T) {
	t.Parallel()
	for _, root := range []string{"/", "/etc", "/etc/nginx", "/var/lib/docker", "/usr/../etc", "/proc/1"} {
		if _, sys := SystemRoot(root); !sys {
			t.Errorf("%s is not seen as a system directory", root)
		}
	}
	for _, ok := range []string{"/var/log/apps", "/var/cache/llm", "/srv/logs", "/opt/app/log", "/var/libfoo"} {
		if d, sys := SystemRoot(ok); sys {
			t.Errorf("%s refused as inside %s", ok, d)
		}
	}
}
