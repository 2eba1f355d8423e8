package actions

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/remediator/engine"
)

// Vacuum runs VACUUM ANALYZE on the configured databases (selfheal's own
// when none is configured) and records how long each took.
type Vacuum struct {
	// DefaultDatabase is selfheal's own database URL.
	DefaultDatabase string
}

var _ engine.Executor = Vacuum{}

// Permit implements engine.Executor.
func (Vacuum) Permit(context.Context, engine.Request) error { return nil }

// Execute implements engine.Executor.
func (a Vacuum) Execute(ctx context.Context, req engine.Request) (engine.Result, error) {
	dbs := req.Action.Databases
	if len(dbs) == 0 {
		dbs = []string{a.DefaultDatabase}
	}
	var done []any
	res := engine.Result{Details: map[string]any{}}
	for _, dsn := range dbs {
		name := databaseName(dsn)
		start := time.Now()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return res, fmt.Errorf("vacuum %s: %w", name, err)
		}
		_, err = conn.Exec(ctx, "VACUUM ANALYZE")
		conn.Close(context.Background())
		done = append(done, map[string]any{"database": name, "seconds": time.Since(start).Seconds()})
		res.Details["databases"] = done
		if err != nil {
			return res, fmt.Errorf("vacuum %s: %w", name, err)
		}
	}
	return res, nil
}

// databaseName names a database for the record without its credentials.
func databaseName(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "(unparseable connection string)"
	}
	return (&url.URL{Scheme: "postgres", Host: fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), Path: "/" + cfg.Database}).String()
}
