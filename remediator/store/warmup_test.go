package store

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/pgtest"
)

// TestWarmUpStatementsRun: every statement the warm-up runs on a new
// engine connection succeeds on a migrated schema. Its errors are ignored
// in use (a schema not migrated yet), so a statement whose parameters
// changed without it would go unseen — and an argument count that does
// not match left the connection hung.
func TestWarmUpStatementsRun(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	s, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := runWarmUp(ctx, conn); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
}
