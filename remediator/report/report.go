// Package report prints selfheal's audit trail for people.
package report

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/selfheal/selfheal/remediator/store"
)

// WriteActivity prints acts, oldest first, as an aligned table.
func WriteActivity(w io.Writer, acts []store.Activity, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tSTATUS\tTARGET\tREMEDIATION\tWHAT\tDETAIL")
	for i := len(acts) - 1; i >= 0; i-- {
		a := acts[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			a.Time.In(loc).Format("2006-01-02 15:04:05.000"), a.Kind, a.Severity,
			dash(a.Target), dash(a.Remediation), a.What, oneLine(a.Detail))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps each row on one line: tabs and newlines would break the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
