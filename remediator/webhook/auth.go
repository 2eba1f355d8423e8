package webhook

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Credentials is what a delivery must present: a bearer token, or a basic
// auth user and password. The zero value accepts every request.
type Credentials struct {
	BearerToken string
	Username    string
	Password    string
}

// ReadSecretFile reads a token or password file. Whitespace around the
// secret (the newline an editor adds, a stray space) is not part of it:
// Alertmanager trims its credentials files the same way, so both sides
// agree. A file with nothing else is an error — it would accept anyone. A
// file that other users may read comes back with a warning.
func ReadSecretFile(path string) (secret, warning string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", "", fmt.Errorf("%s is empty or only whitespace", path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("%s is readable by other users (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	return s, warning, nil
}

// Secret checks a secret given directly (an environment variable): it is
// trimmed like a file's, and one of whitespace only is an error.
func Secret(name, value string) (string, error) {
	s := strings.TrimSpace(value)
	if s == "" {
		return "", fmt.Errorf("%s is empty or only whitespace", name)
	}
	return s, nil
}

var errUnauthorized = errors.New("missing or wrong credentials")

// check verifies r's Authorization header. Comparisons hash both sides first
// so they take the same time whatever the lengths.
func (c Credentials) check(r *http.Request) error {
	switch {
	case c.BearerToken != "":
		h := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || !equal(strings.TrimSpace(tok), c.BearerToken) {
			return errUnauthorized
		}
	case c.Username != "":
		u, p, ok := r.BasicAuth()
		// Evaluate both so a wrong user costs as much as a wrong password.
		userOK, passOK := equal(u, c.Username), equal(p, c.Password)
		if !ok || !userOK || !passOK {
			return errUnauthorized
		}
	}
	return nil
}

func (c Credentials) challenge() string {
	if c.BearerToken != "" {
		return `Bearer realm="selfheal"`
	}
	return `Basic realm="selfheal"`
}

func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
