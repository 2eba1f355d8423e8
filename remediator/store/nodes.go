package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// NodeHeartbeat records that the node's engine is alive, by the
// database's clock, and claims the node's names: its own, which always
// wins, and its aliases, except those that are another node's name or
// alias (returned; they are not the node's). An alert's node is resolved
// through those names.
func (s *Store) NodeHeartbeat(ctx context.Context, b model.NodeBeat) (refused []string, err error) {
	names := b.Names
	if names == nil {
		names = []string{b.Name}
	}
	// The usual beat: the same engine, alive again — one row updated.
	tag, err := s.pool.Exec(ctx, `UPDATE nodes SET last_heartbeat = now(), stopped_at = NULL
		WHERE name = $1 AND engine = $2 AND names = $3 AND version = $4 AND config_fingerprint = $5`,
		b.Name, b.Engine, names, b.Version, b.ConfigFingerprint)
	if err != nil {
		return nil, fmt.Errorf("node heartbeat: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT selfheal_claim_node_names($1, $2)`, b.Name, names).Scan(&refused); err != nil {
			return err
		}
		kept := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(refused, n) })
		_, err := tx.Exec(ctx, `
			INSERT INTO nodes (name, names, engine, version, config_fingerprint)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name) DO UPDATE SET names = EXCLUDED.names, version = EXCLUDED.version,
				config_fingerprint = EXCLUDED.config_fingerprint, last_heartbeat = now(), stopped_at = NULL,
				started_at = CASE WHEN nodes.engine = EXCLUDED.engine THEN nodes.started_at ELSE now() END,
				engine = EXCLUDED.engine`,
			b.Name, kept, b.Engine, b.Version, b.ConfigFingerprint)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("node heartbeat: %w", err)
	}
	return refused, nil
}

// NodeStopped records that the node's engine stopped cleanly (if it is
// still the engine the node last heard from): its jobs wait from now on.
func (s *Store) NodeStopped(ctx context.Context, name, engine string) error {
	_, err := s.pool.Exec(ctx, `UPDATE nodes SET stopped_at = now() WHERE name = $1 AND engine = $2`, name, engine)
	if err != nil {
		return fmt.Errorf("record node stop: %w", err)
	}
	return nil
}

// SessionNode returns the node whose role this store's connections log in
// with ("" for any other role).
func (s *Store) SessionNode(ctx context.Context) (string, error) {
	var node string
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(selfheal_node(), '')`).Scan(&node); err != nil {
		return "", fmt.Errorf("read this session's node: %w", err)
	}
	return node, nil
}

// NodeStatus is one node as the database knows it.
type NodeStatus struct {
	Name              string
	LastHeartbeat     time.Time // zero: never heard from (it has jobs, though)
	Stopped           bool      // its engine stopped cleanly
	Version           string
	ConfigFingerprint string
	Queued            int64     // jobs waiting for it (due or not)
	OldestQueued      time.Time // zero when none
	Enrolled          bool      // it has a role of its own (selfheal node add)
	// AsOf is the database's clock when the node was read: silence is
	// judged by it, not by the reader's (an edge box's clock may drift).
	AsOf time.Time
}

// Nodes lists every node that has heartbeated or has queued jobs, by name.
// A node's credentials see only their own node.
func (s *Store) Nodes(ctx context.Context) ([]NodeStatus, error) {
	rows, err := s.pool.Query(ctx, `
		WITH q AS (
		    SELECT node, count(*) AS queued, min(created_at) AS oldest
		    FROM remediation_jobs WHERE state = 'queued' AND node IS NOT NULL
		    GROUP BY node
		)
		SELECT COALESCE(n.name, q.node), n.last_heartbeat, n.stopped_at IS NOT NULL, statement_timestamp(),
		       COALESCE(n.version, ''), COALESCE(n.config_fingerprint, ''), COALESCE(q.queued, 0), q.oldest,
		       EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = 'selfheal_node_' || regexp_replace(COALESCE(n.name, q.node), '[^a-z0-9_]', '_', 'g'))
		FROM nodes n FULL JOIN q ON q.node = n.name
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (NodeStatus, error) {
		var n NodeStatus
		var beat, oldest *time.Time
		err := row.Scan(&n.Name, &beat, &n.Stopped, &n.AsOf, &n.Version, &n.ConfigFingerprint, &n.Queued, &oldest, &n.Enrolled)
		if beat != nil {
			n.LastHeartbeat = *beat
		}
		if oldest != nil {
			n.OldestQueued = *oldest
		}
		return n, err
	})
}

const nextDueSQL = `SELECT min(not_before) FROM remediation_jobs WHERE state = 'queued' AND node = ANY($1)`

// NextDue returns when the next queued job for nodes is due, through the
// per-node queue index; false when none is queued. An engine in a fleet
// sleeps until then rather than polling often: new jobs wake it.
func (s *Store) NextDue(ctx context.Context, nodes []string) (time.Time, bool, error) {
	var next *time.Time
	err := s.pool.QueryRow(ctx, nextDueSQL, nodes).Scan(&next)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next due job: %w", err)
	}
	if next == nil {
		return time.Time{}, false, nil
	}
	return *next, true, nil
}

// JobChannel is the notification channel that wakes node's engine: one
// per node, so a delivery wakes only the engines it queued work for. A
// hash keeps any node name within PostgreSQL's 63-byte identifiers.
func JobChannel(node string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(node)))
	return "selfheal_jobs_" + hex.EncodeToString(sum[:8])
}

// NotifyNodes wakes the engines of nodes, which just got jobs.
func (s *Store) NotifyNodes(ctx context.Context, nodes []string) error {
	channels := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if n != "" {
			channels = append(channels, JobChannel(n))
		}
	}
	if len(channels) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify(c, '') FROM unnest($1::text[]) c`, channels); err != nil {
		return fmt.Errorf("wake nodes: %w", err)
	}
	return nil
}

// ListenForJobs calls wake whenever jobs are queued for node, until ctx
// ends or the connection fails (the caller listens again; its workers
// poll meanwhile). It holds one connection of the pool for as long.
func (s *Store) ListenForJobs(ctx context.Context, node string, wake func()) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("listen for jobs: %w", err)
	}
	// A connection that was listening is not given back to the pool: it
	// would go on receiving notifications no one reads.
	defer func() {
		_ = conn.Conn().Close(context.Background())
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{JobChannel(node)}.Sanitize()); err != nil {
		return fmt.Errorf("listen for jobs: %w", err)
	}
	wake() // jobs queued before LISTEN took effect are not missed
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("listen for jobs: %w", err)
		}
		wake()
	}
}

// nodeRoleName is the login role of a node: selfheal_node_ and its name
// with anything but [a-z0-9_] as _.
func nodeRoleName(prefix, node string) string {
	return prefix + regexp.MustCompile(`[^a-z0-9_]`).ReplaceAllString(strings.ToLower(node), "_")
}

// NodeNamePattern is what a node name may be: a host name (letters,
// digits, dots, hyphens, underscores), at most 48 characters, so its role
// name fits PostgreSQL's 63.
var NodeNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$`)

// Enrolment is a login role created for a node or a webhook replica.
type Enrolment struct {
	Role     string
	Password string
	DSN      string // the database URL with the new role's credentials
}

// ErrNoGroupRole means the migrations could not create selfheal's group
// roles (the migrating role lacks CREATEROLE).
var ErrNoGroupRole = errors.New("group role missing")

// Enrol creates (or, when it exists, gives a new password to) the login
// role of node — or, with webhook, of a webhook-only replica named so —
// and returns its credentials as a database URL built from base. The
// store's role needs CREATEROLE.
func (s *Store) Enrol(ctx context.Context, node string, webhook bool, base string) (Enrolment, error) {
	if !NodeNamePattern.MatchString(node) {
		return Enrolment{}, fmt.Errorf("node name %q: use letters, digits, '.', '-' and '_' (at most 48, starting with a letter or digit)", node)
	}
	node = strings.ToLower(node)
	group, prefix := "selfheal_node", "selfheal_node_"
	if webhook {
		group, prefix = "selfheal_webhook", "selfheal_webhook_"
	}
	e := Enrolment{Role: nodeRoleName(prefix, node), Password: randomPassword()}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var hasGroup, exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)`,
			group, e.Role).Scan(&hasGroup, &exists); err != nil {
			return err
		}
		if !hasGroup {
			return fmt.Errorf("%w: role %s does not exist: run `selfheal migrate` once as a role with CREATEROLE (or create it: CREATE ROLE %s NOLOGIN) and migrate again",
				ErrNoGroupRole, group, group)
		}
		stmt := `SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', $1::text, $2::text, $3::text)`
		if exists {
			stmt = `SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text, $3::text)`
		}
		var ddl string
		if err := tx.QueryRow(ctx, stmt, e.Role, e.Password, group).Scan(&ddl); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, ddl); err != nil {
			return err
		}
		if webhook {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO node_roles (role_name, node) VALUES ($1, $2)
			ON CONFLICT (role_name) DO UPDATE SET node = EXCLUDED.node`, e.Role, node); err != nil {
			return err
		}
		// Its name is its own from now on, even if another node had
		// claimed it as an alias before it was enrolled.
		_, err := tx.Exec(ctx, `INSERT INTO node_names (name, node) VALUES ($1, $1)
			ON CONFLICT (name) DO UPDATE SET node = EXCLUDED.node`, node)
		return err
	})
	if err != nil {
		return Enrolment{}, fmt.Errorf("enrol %s: %w", node, err)
	}
	e.DSN, err = withCredentials(base, e.Role, e.Password)
	return e, err
}

func randomPassword() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// withCredentials returns the database URL base with user and password
// replaced: a postgres:// URL (multi-host ones included) or a key=value
// connection string.
func withCredentials(base, user, password string) (string, error) {
	if _, err := pgconn.ParseConfig(base); err != nil {
		return "", fmt.Errorf("database URL: %w", redactURL(err))
	}
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", errors.New("database URL: not a valid postgres:// URL")
		}
		u.User = url.UserPassword(user, password)
		return u.String(), nil
	}
	settings, err := keywordValues(base)
	if err != nil {
		return "", fmt.Errorf("database URL: %w", err)
	}
	quote := func(v string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'" }
	var kept []string
	for _, kv := range settings {
		if kv[0] != "user" && kv[0] != "password" {
			kept = append(kept, kv[0]+"="+quote(kv[1]))
		}
	}
	return strings.Join(append(kept, "user="+quote(user), "password="+quote(password)), " "), nil
}

// keywordValues splits a key=value connection string as libpq (and pgx)
// read it: spaces around "=" allowed, a value in single quotes may hold
// spaces, and a backslash escapes the next character.
func keywordValues(s string) ([][2]string, error) {
	var out [][2]string
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skipSpace()
		if i == len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		key := s[start:i]
		skipSpace()
		if key == "" || i == len(s) || s[i] != '=' {
			return nil, errors.New("not a valid key=value connection string")
		}
		i++
		skipSpace()
		var v strings.Builder
		quoted := i < len(s) && s[i] == '\''
		if quoted {
			i++
		}
		for ; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				v.WriteByte(s[i])
				continue
			}
			if quoted && c == '\'' || !quoted && (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
				break
			}
			v.WriteByte(c)
		}
		if quoted {
			if i == len(s) {
				return nil, errors.New("not a valid key=value connection string: unterminated quoted value")
			}
			i++ // the closing quote
		}
		out = append(out, [2]string{key, v.String()})
	}
}

// Silent reports whether the node's engine is gone: stopped, never heard
// from, or quiet for longer than after, by the database's clock.
func (n NodeStatus) Silent(after time.Duration) bool {
	return n.Stopped || n.LastHeartbeat.IsZero() || n.AsOf.Sub(n.LastHeartbeat) > after
}

// NodeWaker wakes node engines for a webhook replica, at most once per
// interval: every notification wakes every listening session of the
// database (PostgreSQL signals them all, whatever the channel), so at 500
// nodes one round costs 500 wake-ups. The first wake-up after a quiet
// interval goes at once; under load, the nodes queued meanwhile share one
// round, an interval later.
type NodeWaker struct {
	st       *Store
	interval time.Duration
	onError  func(error)

	mu      sync.Mutex
	pending map[string]bool
	kick    chan struct{}
}

// WakeInterval is a webhook replica's NodeWaker interval. At 500 nodes
// and 100 alerts/s, 25 ms cost PostgreSQL a third more CPU than 50 ms on
// the benchmark's machine, and saturated it (docs/benchmarks.md).
const WakeInterval = 50 * time.Millisecond

// NewNodeWaker returns a NodeWaker; Run sends its rounds.
func NewNodeWaker(st *Store, interval time.Duration, onError func(error)) *NodeWaker {
	return &NodeWaker{st: st, interval: interval, onError: onError, pending: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// Wake asks for nodes' engines to be woken.
func (w *NodeWaker) Wake(nodes []string) {
	w.mu.Lock()
	for _, n := range nodes {
		if n != "" {
			w.pending[n] = true
		}
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run sends the rounds until ctx ends.
func (w *NodeWaker) Run(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		if wait := w.interval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		w.mu.Lock()
		nodes := make([]string, 0, len(w.pending))
		for n := range w.pending {
			nodes = append(nodes, n)
		}
		clear(w.pending)
		w.mu.Unlock()
		last = time.Now()
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := w.st.NotifyNodes(nctx, nodes); err != nil && w.onError != nil && ctx.Err() == nil {
			w.onError(err) // the nodes poll: a lost round delays, loses nothing
		}
		cancel()
	}
}
