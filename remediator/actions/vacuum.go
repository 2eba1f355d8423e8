package actions

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/remediator/action"
)

func init() {
	register("vacuum", func() action.Params { return &VacuumParams{} }, func(Deps) action.Executor { return Vacuum{} })
}

// VacuumParams are vacuum's parameters.
type VacuumParams struct {
	// Databases are connection URLs of the application's databases.
	Databases []string `yaml:"databases"`
}

// Problems implements action.Params.
func (p *VacuumParams) Problems() []string {
	if len(p.Databases) == 0 {
		return []string{"databases: needs the application's database URL(s); selfheal's own is kept by its retention"}
	}
	return nil
}

// Vacuum runs VACUUM ANALYZE on the application's databases, as
// configured, and records how long each took. It never picks a database by
// itself: selfheal's own is kept small by its retention.
type Vacuum struct{}

var _ action.Executor = Vacuum{}

// Permit implements action.Executor.
func (Vacuum) Permit(context.Context, action.Request) error { return nil }

// Execute implements action.Executor.
func (Vacuum) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	var dbs []string
	if p, ok := req.Params.(*VacuumParams); ok {
		dbs = p.Databases
	}
	if len(dbs) == 0 {
		return action.Result{}, fmt.Errorf("vacuum: no database configured")
	}
	var done []any
	res := action.Result{Details: map[string]any{}}
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
