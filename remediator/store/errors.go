package store

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unstorable reports whether err says that the data itself can never be
// stored — a NUL byte in text (SQLSTATE 22P05), a value out of range, a key
// too long for an index (54000): the SQLSTATE classes 22 (data exception)
// and 54 (program limit exceeded). Trying again cannot help, so the caller
// must reject the data rather than ask for a retry. Every other error (the
// database down, a timeout) may pass.
func Unstorable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "54":
		return true
	}
	return false
}

// PermissionDenied reports whether err is PostgreSQL refusing a statement
// to the session's role.
func PermissionDenied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501" // insufficient_privilege
}
