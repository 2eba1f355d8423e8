package optin

import "testing"

func TestAllows(t *testing.T) {
	for _, tc := range []struct {
		label  string
		names  []string
		name   string
		labels map[string]string
		want   bool
	}{
		{"selfheal.enable=true", nil, "llm", map[string]string{"selfheal.enable": "true"}, true},
		{"selfheal.enable=true", nil, "llm", map[string]string{"selfheal.enable": "false"}, false},
		{"selfheal.enable=true", nil, "llm", nil, false},
		{"selfheal.enable", nil, "llm", map[string]string{"selfheal.enable": "anything"}, true},
		{"selfheal.enable", nil, "llm", map[string]string{"other": "x"}, false},
		{"selfheal.enable=true", []string{"/db"}, "db", nil, true},
		{"selfheal.enable=true", []string{"db"}, "/db", nil, true},
		{"", []string{"db"}, "llm", map[string]string{"": ""}, false}, // no label: only the list
		{"", nil, "llm", nil, false},
	} {
		if got := New(tc.label, tc.names).Allows(tc.name, tc.labels); got != tc.want {
			t.Errorf("label %q names %v: Allows(%q, %v) = %v", tc.label, tc.names, tc.name, tc.labels, got)
		}
	}
	if l := New("k", nil).Label(); l != "k" {
		t.Errorf("label = %q", l)
	}
	if l := New("k=v", []string{"/b", "a"}); l.Label() != "k=v" || len(l.Names()) != 2 || l.Names()[0] != "a" {
		t.Errorf("label %q names %v", l.Label(), l.Names())
	}
}
