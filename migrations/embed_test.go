package migrations

import (
	"testing"
	"testing/fstest"
)

func TestAllEmbedded(t *testing.T) {
	ms, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || ms[0].Name != "seed_schema" {
		t.Fatalf("unexpected migrations: %+v", ms)
	}
}

func TestParseRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		files fstest.MapFS
		want  string
	}{
		"gap": {
			fstest.MapFS{"0001_a.sql": {}, "0003_c.sql": {}},
			"migration 0003_c: expected version 2 (versions start at 1 without gaps)",
		},
		"bad name": {
			fstest.MapFS{"1_a.sql": {}},
			`migration "1_a.sql": name must look like 0001_name.sql`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parse(tc.files)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
