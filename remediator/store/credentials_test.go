package store

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestWithCredentials: a node's enrolment replaces the user and password
// of any connection string pgx reads, and keeps the rest as pgx read it —
// quoted values with spaces, escapes and spaces around "=" included.
func TestWithCredentials(t *testing.T) {
	t.Parallel()
	for _, base := range []string{
		"postgres://admin:old@db1:5433,db2:5433/selfheal?sslmode=disable",
		"host=db1 port=5433 dbname=selfheal user=admin password=old sslmode=disable",
		"host = db1  port=5433 dbname='self heal' password='o\\'ld pw' application_name=x\\ y sslmode=disable",
	} {
		got, err := withCredentials(base, "node-a", "n3w pa'ss\\word")
		if err != nil {
			t.Fatalf("%q: %v", base, err)
		}
		want, err := pgconn.ParseConfig(base)
		if err != nil {
			t.Fatal(err)
		}
		c, err := pgconn.ParseConfig(got)
		if err != nil {
			t.Fatalf("%q gave %q, which pgx cannot read: %v", base, got, err)
		}
		if c.User != "node-a" || c.Password != "n3w pa'ss\\word" || c.Host != want.Host || c.Port != want.Port ||
			c.Database != want.Database || c.RuntimeParams["application_name"] != want.RuntimeParams["application_name"] {
			t.Errorf("%q → %q: user %q password %q host %q port %d database %q params %v",
				base, got, c.User, c.Password, c.Host, c.Port, c.Database, c.RuntimeParams)
		}
	}
	if _, err := withCredentials("host=db1 dbname='unterminated", "u", "p"); err == nil {
		t.Error("an unterminated quote was accepted")
	}
}
