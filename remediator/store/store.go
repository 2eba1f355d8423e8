// Package store holds every SQL statement selfheal runs against PostgreSQL:
// migrations, alert ingestion, the job queue, decision state and the audit
// trail. Callers see Go types; no SQL leaves this package.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/selfheal/selfheal/migrations"
)

// Store is a pool of connections to selfheal's database.
type Store struct {
	pool        *pgxpool.Pool
	silentAfter time.Duration
}

// Options tunes the connection pool.
type Options struct {
	// MaxConns bounds the pool; zero means pgxpool's default.
	MaxConns int32
	// MinConns are kept open, so a burst does not wait for new connections.
	MinConns int32
	// ApplicationName is shown in pg_stat_activity.
	ApplicationName string
	// GenericPlans plans each statement once per connection, not at each
	// of its first executions: for a fleet node, whose connections run
	// each statement a few times an hour, planning is most of the work.
	GenericPlans bool
	// WarmUp runs the engine's hot read statements once on each new
	// connection, so that the first job on it does not pay for loading
	// PostgreSQL's catalog caches and planning.
	WarmUp bool
	// NodeSilentAfter, in a fleet, is how long without a heartbeat makes a
	// node silent: a job queued for it is recorded as waiting. Zero: one
	// host, no such record.
	NodeSilentAfter time.Duration
}

// Open connects to the database at url. It does not wait for the server:
// connections are made on first use, so selfheal can start (and report
// not-ready) while the database is down.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", redactURL(err))
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.MinConns = min(opts.MinConns, cfg.MaxConns)
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 2*time.Second {
		cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	}
	name := opts.ApplicationName
	if name == "" {
		name = "selfheal"
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	// Every statement selfheal runs is short. JIT compilation, which the
	// planner starts on estimated cost alone, takes tens of milliseconds
	// where an estimate is off (a table too new to have statistics).
	if _, set := cfg.ConnConfig.RuntimeParams["jit"]; !set {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	if opts.GenericPlans {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	if opts.WarmUp {
		cfg.AfterConnect = warmUp
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return &Store{pool: pool, silentAfter: opts.NodeSilentAfter}, nil
}

// NodeOptions are the pool options of a fleet node's engine with workers
// workers: small (each node's connections count on the central server:
// one listens, each worker claims on one and writes its intent on
// another), all connected and warm before the first job, and planned once
// per connection.
func NodeOptions(workers int, name string) Options {
	n := int32(workers + 2)
	return Options{MaxConns: n, MinConns: n, GenericPlans: true, WarmUp: true, ApplicationName: name}
}

// warmUp runs the engine's hot read statements once on a new connection.
// It is best effort: a schema not migrated yet fails them, harmlessly.
func warmUp(ctx context.Context, conn *pgx.Conn) error {
	_ = runWarmUp(ctx, conn) // a connection that could not warm up still works
	return nil
}

// runWarmUp runs the hot statements once, with arguments of the right
// number and types (TestWarmUpStatementsRun: a wrong count once left
// every engine connection hung).
func runWarmUp(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	none := []string{}
	b := &pgx.Batch{}
	b.Queue("SET enable_sort = off") // as claimJobs plans it
	b.Queue(claimNodeSQL, none, none, 0.0, none)
	b.Queue("RESET enable_sort")
	b.Queue(stateSQL, "", "", 0.0, 0.0, int64(0), 0.0, time.Time{}, 0.0, 0)
	b.Queue(nextDueSQL, none)
	return conn.SendBatch(ctx, b).Close()
}

// redactURL keeps a password in a malformed URL out of error messages:
// pgx masks passwords only on a best-effort basis.
func redactURL(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// The inner error may quote the whole string, password included.
		return errors.New("not a valid postgres:// URL or key=value connection string")
	}
	return err
}

// Close closes every connection.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

const migrationLockKey = 0x73656c6668 // "selfh": serialises migrators across replicas

// Migrate applies the migrations the database has not seen yet, each in its
// own transaction, and returns how many it applied. Concurrent callers (say,
// two replicas starting at once) are serialised by an advisory lock.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	all, err := migrations.All()
	if err != nil {
		return 0, err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	// A current schema needs nothing, not even the right to create: a
	// fleet node's role may read the version but change no schema.
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	if exists {
		if v, err := schemaVersion(ctx, conn); err != nil {
			return 0, err
		} else if v == len(all) {
			return 0, nil
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return 0, fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrationLockKey) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	current, err := schemaVersion(ctx, conn)
	if err != nil {
		return 0, err
	}
	if current > len(all) {
		return 0, fmt.Errorf("migrate: database is at version %d, newer than this binary's %d", current, len(all))
	}
	applied := 0
	for _, m := range all[current:] {
		apply := func() error {
			return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, m.SQL); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
				return err
			})
		}
		err := apply()
		// What a server shares between its databases (a role's settings)
		// cannot be changed by two transactions at once: another
		// installation's migration on the same server got there first.
		// The migration is a transaction of its own: run it again.
		for try := 1; try < 5 && sharedCatalogRace(err); try++ {
			select {
			case <-ctx.Done():
				return applied, ctx.Err()
			case <-time.After(time.Duration(try) * 100 * time.Millisecond):
			}
			err = apply()
		}
		if err != nil {
			return applied, fmt.Errorf("migrate %04d_%s: %w", m.Version, m.Name, err)
		}
		applied++
	}
	return applied, nil
}

// MigrateURL migrates the database at url on a pool of its own, closed
// before it returns.
func MigrateURL(ctx context.Context, url string) error {
	s, err := Open(ctx, url, Options{MaxConns: 1})
	if err != nil {
		return err
	}
	defer s.Close()
	_, err = s.Migrate(ctx)
	return err
}

// sharedCatalogRace reports whether err is PostgreSQL refusing a change to
// a catalog its databases share that another transaction changed at the
// same time.
func sharedCatalogRace(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "XX000" && pe.Message == "tuple concurrently updated"
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	err := q.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// ErrNotMigrated means the database answers but lacks migrations this
// binary needs.
var ErrNotMigrated = errors.New("database schema is not migrated")

// Ready reports whether the database answers and carries every migration
// this binary knows.
func (s *Store) Ready(ctx context.Context) error {
	all, err := migrations.All()
	if err != nil {
		return err
	}
	var v int
	err = s.pool.QueryRow(ctx, `SELECT COALESCE((SELECT max(version) FROM schema_migrations), 0)`).Scan(&v)
	if err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == "42P01" { // undefined_table
			return ErrNotMigrated
		}
		return err
	}
	if v < len(all) {
		return fmt.Errorf("%w: at version %d of %d", ErrNotMigrated, v, len(all))
	}
	return nil
}
