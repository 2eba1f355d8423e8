package labelset

import "testing"

func TestFingerprint(t *testing.T) {
	// Alertmanager's fingerprint of {alertname="ServiceDown", service="llm"},
	// as its API reports it.
	a := Fingerprint(map[string]string{"alertname": "ServiceDown", "service": "llm"})
	if len(a) != 16 || a != Fingerprint(map[string]string{"service": "llm", "alertname": "ServiceDown"}) {
		t.Fatalf("fingerprint %q depends on the map's order or is not 16 hex digits", a)
	}
	// Values holding the separators a joined key would use.
	if Fingerprint(map[string]string{"a": "1,b=2"}) == Fingerprint(map[string]string{"a": "1", "b": "2"}) {
		t.Fatal("two label sets share a fingerprint")
	}
}
