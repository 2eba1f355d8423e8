// Package labelset identifies an alert's label set the one way selfheal
// does everywhere: by Alertmanager's own fingerprint (prometheus/common's
// model), so that an alert selfheal raises or simulates itself, one the
// fast path opens and one Alertmanager delivers are keyed alike.
package labelset

import "github.com/prometheus/common/model"

// Of is the label set of m.
func Of(m map[string]string) model.LabelSet {
	ls := make(model.LabelSet, len(m))
	for k, v := range m {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}

// Fingerprint is Alertmanager's fingerprint of m, in its 16 hex digits.
// Unlike labels joined with separators, no label value can make two sets
// share it but by a 64-bit hash collision.
func Fingerprint(m map[string]string) string { return Of(m).Fingerprint().String() }
