// Package pgtest gives each test a fresh database on a real PostgreSQL
// server: the one named by SELFHEAL_TEST_DATABASE_URL, or else a throw-away
// cluster started from the local PostgreSQL binaries for the test binary.
//
// Packages that use it call Main from TestMain so the throw-away cluster is
// stopped when the tests end. With CI=true a missing server fails the test;
// otherwise the test is skipped with the reason.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/selfheal/selfheal/internal/testenv"
)

// EnvURL names the variable that points tests at an existing server. The
// role in it must be allowed to create databases.
const EnvURL = "SELFHEAL_TEST_DATABASE_URL"

var (
	once     sync.Once
	adminURL string
	startErr error
	shared   *Cluster // the throw-away cluster, when this process started one
)

// Main runs the tests and stops the throw-away cluster, if one was started.
func Main(m interface{ Run() int }, opts ...Option) int {
	for _, o := range opts {
		o()
	}
	code := m.Run()
	dropTemplate()
	closeAdmin()
	stopCluster()
	return code
}

// Option is an option of Main.
type Option func()

// Template makes DSN give each test a copy of one database that migrate
// brought to the current schema, once per test binary (CREATE DATABASE …
// TEMPLATE): a test starts from the schema without paying for every
// migration, and no two tests migrate at once. migrate must leave no
// connection to the database open.
func Template(migrate func(ctx context.Context, dsn string) error) Option {
	return func() { templateMigrate = migrate }
}

var (
	templateMigrate func(ctx context.Context, dsn string) error
	templateOnce    sync.Once
	templateName    string
	templateErr     error
)

// DSN creates a new database for t and returns its connection URL: a copy
// of the migrated template where Main was given one (Template), else an
// empty one. The database is dropped when t ends.
func DSN(t testing.TB) string {
	t.Helper()
	admin := server(t)
	from := ""
	if templateMigrate != nil {
		templateOnce.Do(func() { templateName, templateErr = makeTemplate(admin) })
		if templateErr != nil {
			t.Fatalf("migrated template database: %v", templateErr)
		}
		from = " TEMPLATE " + templateName
	}
	return create(t, admin, from)
}

// EmptyDSN is DSN for a database with no schema at all, whatever Main was
// given: for tests of the migrations themselves.
func EmptyDSN(t testing.TB) string {
	t.Helper()
	return create(t, server(t), "")
}

// server starts (once) or finds the server, and returns its admin URL.
func server(t testing.TB) string {
	t.Helper()
	once.Do(func() { adminURL, startErr = findServer() })
	if startErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required (CI=true): %v", startErr)
		}
		t.Skipf("no PostgreSQL: %v", startErr)
	}
	return adminURL
}

func create(t testing.TB, admin, from string) string {
	t.Helper()
	name := "selfheal_test_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := adminExec(ctx, admin, "CREATE DATABASE "+name+from+copyStrategy(ctx, admin)); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := adminExec(ctx, admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	return withDatabase(admin, name)
}

var (
	strategyOnce sync.Once
	strategy     string
)

// copyStrategy is the clause that makes CREATE DATABASE copy its template
// file by file rather than through the WAL (PostgreSQL 15's default):
// for a template of a few megabytes it costs the server less than half the
// CPU (0.11 s against 0.25 s for a create and a drop, measured on the test
// machine), and a test suite creates hundreds. Servers before 15 copy files
// anyway and know no clause.
func copyStrategy(ctx context.Context, admin string) string {
	strategyOnce.Do(func() {
		var version int
		if err := queryRow(ctx, admin, "SELECT current_setting('server_version_num')::int", &version); err == nil && version >= 150000 {
			strategy = " STRATEGY FILE_COPY"
		}
	})
	return strategy
}

// makeTemplate creates and migrates the template database.
func makeTemplate(admin string) (string, error) {
	name := "selfheal_template_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := adminExec(ctx, admin, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	if err := templateMigrate(ctx, withDatabase(admin, name)); err != nil {
		return "", err
	}
	return name, nil
}

func dropTemplate() {
	if templateName == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = adminExec(ctx, adminURL, "DROP DATABASE IF EXISTS "+templateName+" WITH (FORCE)")
}

// withDatabase is the URL admin with its database replaced by name.
func withDatabase(admin, name string) string {
	u, err := url.Parse(admin)
	if err != nil {
		panic(fmt.Sprintf("pgtest: admin URL: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

var (
	adminMu   sync.Mutex
	adminPool *pgxpool.Pool
)

// adminExec runs sql on the server's admin database, over connections kept
// for the whole test binary. A new connection costs the server about 40 ms
// of CPU on the test machine (a backend forked and initialised), and
// every test's database would otherwise cost two: one to create it, one to
// drop it.
func adminExec(ctx context.Context, admin, sql string) error {
	adminMu.Lock()
	if adminPool == nil {
		p, err := pgxpool.New(ctx, admin)
		if err != nil {
			adminMu.Unlock()
			return err
		}
		adminPool = p
	}
	p := adminPool
	adminMu.Unlock()
	_, err := p.Exec(ctx, sql)
	return err
}

func closeAdmin() {
	adminMu.Lock()
	defer adminMu.Unlock()
	if adminPool != nil {
		adminPool.Close()
		adminPool = nil
	}
}

func exec1(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func findServer() (string, error) {
	if u := os.Getenv(EnvURL); u != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return u, exec1(ctx, u, "SELECT 1")
	}
	return startCluster()
}

// Cluster is a PostgreSQL server in a temporary directory.
type Cluster struct {
	dir     string
	bin     string
	port    int
	cmd     *exec.Cmd
	cred    *syscall.Credential // the postgres user's, when running as root
	durable bool
	extra   []string // more -c settings
	// reserved holds the port for the cluster's life (testenv.ReservePort).
	reserved *testenv.Reservation
}

// NewCluster starts a private server for one test, which may stop and start
// it (to test an outage). It is removed when t ends. Like the shared one, it
// trades durability for speed (fsync off).
func NewCluster(t testing.TB) *Cluster { return newCluster(t, false) }

// NewDurableCluster starts a private server with PostgreSQL's default
// durability (fsync and synchronous commit on), for benchmarks whose
// figures must hold on a real installation. settings are more
// "-c", "name=value" arguments. Its WAL is that of a server that has run a
// while (warmWALSQL).
func NewDurableCluster(t testing.TB, settings ...string) *Cluster {
	c := newCluster(t, true, settings...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := exec1(ctx, c.URL(), warmWALSQL); err != nil {
		t.Fatalf("warm the WAL: %v", err)
	}
	return c
}

// warmWALSQL gives a new cluster the WAL segments a server that has run a
// while has: it writes 256 MB of WAL (messages, no table) and checkpoints,
// which renames the segments behind the checkpoint into the next ones
// (wal_recycle). A new cluster has one segment; each next one is created
// and zero-filled (wal_init_zero) by the commit that first needs it, a
// stall of tens of milliseconds every 16 MB (measured 40–250 ms at the
// webhook's p99) that an installation past its first checkpoints does not
// have.
const warmWALSQL = `
SELECT count(pg_logical_emit_message(false, 'selfheal-pgtest-warm', repeat('x', 1048576))) FROM generate_series(1, 256);
CHECKPOINT`

func newCluster(t testing.TB, durable bool, settings ...string) *Cluster {
	t.Helper()
	c, err := initCluster()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required (CI=true): %v", err)
		}
		t.Skipf("no PostgreSQL: %v", err)
	}
	c.durable, c.extra = durable, settings
	t.Cleanup(c.remove)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// URL is the connection URL of the cluster's postgres database.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

func startCluster() (string, error) {
	c, err := initCluster()
	if err != nil {
		return "", err
	}
	shared = c
	if err := c.Start(); err != nil {
		return "", err
	}
	return c.URL(), nil
}

// initCluster runs initdb in a temporary directory, as the postgres user
// when running as root (initdb refuses root).
func initCluster() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "selfheal-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user for initdb: %w", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	out, err := c.command("initdb", "-D", c.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if err := c.reservePort(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// command runs a server binary directly (no su or runuser in between, so
// signals reach it), switching to the postgres user when running as root.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Dir = c.dir
	}
	return cmd
}

// Start starts the server and waits until it answers.
func (c *Cluster) Start() error {
	args := []string{"-D", c.data(), "-k", c.dir, "-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"}
	if !c.durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	args = append(args, c.extra...)
	cmd := c.command("postgres", args...)
	logFile, err := os.OpenFile(filepath.Join(c.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o666)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := exec1(ctx, c.URL(), "SELECT 1")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
			return fmt.Errorf("postgres did not start: %v: %s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop shuts the server down (fast mode: clients are disconnected).
func (c *Cluster) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	c.cmd = nil
}

// Crash kills the server and all its processes at once (SIGKILL), as the
// loss of its machine would. (Backends are not in the postmaster's process
// group — each calls setsid — so they are found as its children; it is
// stopped first so that it forks no more.)
func (c *Cluster) Crash() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	pid := c.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	for _, p := range children(pid) {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = c.cmd.Wait()
	c.cmd = nil
}

type procStat struct {
	pid    int
	fields []string // of /proc/PID/stat, from the state on (field 3)
}

// children are the processes whose parent is pid, and pid itself.
func children(pid int) []procStat {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []procStat
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // exited meanwhile
		}
		// The command name may hold spaces: fields start after its ')'.
		i := strings.LastIndexByte(string(b), ')')
		fields := strings.Fields(string(b)[i+1:])
		if len(fields) < 15 {
			continue
		}
		p, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid || p == pid {
			out = append(out, procStat{pid: p, fields: fields})
		}
	}
	return out
}

// CPUTime is the processor time the server has used: the postmaster, its
// live children, and the children that already exited.
func (c *Cluster) CPUTime() (time.Duration, error) {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0, errors.New("the server is not running")
	}
	pid := c.cmd.Process.Pid
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	var total time.Duration
	for _, p := range children(pid) {
		n := 2 // utime, stime (fields 14, 15)
		if p.pid == pid {
			n = 4 // and the exited children's (16, 17)
		}
		for _, v := range p.fields[11 : 11+n] {
			t, _ := strconv.ParseInt(v, 10, 64)
			total += time.Duration(t) * tick
		}
	}
	return total, nil
}

// Port is the port the server listens on, on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// NewReplicated starts a primary and a streaming standby of it that every
// commit waits for (synchronous_standby_names '*', synchronous_commit on):
// a commit the primary acknowledged is on the standby. Both are removed
// when t ends.
func NewReplicated(t testing.TB) (primary, standby *Cluster) {
	t.Helper()
	primary = newCluster(t, true, "-c", "fsync=off", "-c", "synchronous_standby_names=*", "-c", "synchronous_commit=on")
	dir, err := os.MkdirTemp("", "selfheal-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	standby = &Cluster{dir: dir, bin: primary.bin, cred: primary.cred, durable: true, extra: []string{"-c", "fsync=off"}}
	t.Cleanup(standby.remove)
	if standby.cred != nil {
		if err := os.Chown(dir, int(standby.cred.Uid), int(standby.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := standby.reservePort(); err != nil {
		t.Fatal(err)
	}
	out, err := standby.command("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.port), "-U", "postgres",
		"-D", standby.data(), "-R", "-X", "stream", "--no-sync").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup: %v: %s", err, out)
	}
	if err := standby.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var state string
		err := queryRow(ctx, primary.URL(), `SELECT COALESCE((SELECT sync_state FROM pg_stat_replication LIMIT 1), '')`, &state)
		cancel()
		if err == nil && state == "sync" {
			return primary, standby
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby never became synchronous (state %q, %v)", state, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Promote makes a standby the primary, and waits until it is.
func (c *Cluster) Promote() error {
	out, err := c.command("pg_ctl", "promote", "-w", "-D", c.data()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl promote: %v: %s", err, out)
	}
	return nil
}

func queryRow(ctx context.Context, dsn, sql string, dst any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dst)
}

func (c *Cluster) remove() {
	c.Stop()
	_ = os.RemoveAll(c.dir)
	if c.reserved != nil {
		c.reserved.Release()
	}
}

func stopCluster() {
	if shared != nil {
		shared.remove()
	}
}

// binDir finds the PostgreSQL server binaries: pg_config's bindir, else the
// newest Debian /usr/lib/postgresql/N/bin.
func binDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries found (set " + EnvURL + " or install postgresql)")
}

func versionOf(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// reservePort gives the cluster a port of its own until it is removed: one
// no other test takes between now and the server's bind.
func (c *Cluster) reservePort() error {
	r, err := testenv.ReservePort()
	if err != nil {
		return err
	}
	c.port, c.reserved = r.Port, r
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
