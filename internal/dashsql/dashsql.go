// Package dashsql reads the SQL queries of the Grafana dashboards and
// expands the macros they use as Grafana's PostgreSQL data source does, so
// tests and benchmarks run exactly what a dashboard runs.
package dashsql

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
)

// Query is one SQL panel query.
type Query struct {
	File, Panel string
	SQL         string
}

// Queries returns every SQL panel query of the dashboards in dir, by file
// and panel order.
func Queries(dir string) ([]Query, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no dashboards in %s: %v", dir, err)
	}
	sort.Strings(files)
	var qs []Query
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					RawSQL string `json:"rawSql"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, p := range d.Panels {
			for _, t := range p.Targets {
				if t.RawSQL != "" {
					qs = append(qs, Query{File: filepath.Base(f), Panel: p.Title, SQL: t.RawSQL})
				}
			}
		}
	}
	return qs, nil
}

var (
	timeFilter = regexp.MustCompile(`\$__timeFilter\(([a-z_.]+)\)`)
	timeGroup  = regexp.MustCompile(`\$__timeGroupAlias\(([a-z_.]+), '(\d+)m'\)`)
	unknown    = regexp.MustCompile(`\$__\w+`)
)

// Expand replaces the macros the dashboards use, for a time range of the
// given length ending now (a PostgreSQL interval: '1 day', '24 hours').
// A macro it does not know is an error.
func Expand(sql, window string) (string, error) {
	sql = timeFilter.ReplaceAllString(sql, `$1 BETWEEN now() - interval '`+window+`' AND now() + interval '1 minute'`)
	sql = timeGroup.ReplaceAllString(sql, `floor(extract(epoch from $1) / ($2 * 60)) * ($2 * 60) AS "time"`)
	if m := unknown.FindString(sql); m != "" {
		return "", fmt.Errorf("macro %s is not expanded here", m)
	}
	return sql, nil
}
