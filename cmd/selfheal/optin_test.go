package main

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

// optedIn is the configuration config with targets.docker.require_label
// set to requireLabel (dockertest.OptIn): the selfheal it configures acts
// on the calling test's containers alone.
func optedIn(t testing.TB, config, requireLabel string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(config), &doc); err != nil || len(doc.Content) != 1 {
		t.Fatalf("optedIn: not a YAML document: %v", err)
	}
	docker := mapping(mapping(doc.Content[0], "targets"), "docker")
	set(docker, "require_label", requireLabel)
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// mapping is m's mapping under key, added if m lacks it.
func mapping(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}

// set sets key to the string value in mapping m.
func set(m *yaml.Node, key, value string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

func TestOptedIn(t *testing.T) {
	for _, in := range []string{
		"remediations: []\n",
		"targets:\n  docker: {stop_timeout: 2s}\nremediations: []\n",
		"targets: {docker: {require_label: selfheal.enable=true}}\n",
	} {
		var got struct {
			Targets struct {
				Docker map[string]string
			}
		}
		if err := yaml.Unmarshal([]byte(optedIn(t, in, "k=true")), &got); err != nil || got.Targets.Docker["require_label"] != "k=true" {
			t.Errorf("optedIn(%q): %+v %v", in, got, err)
		}
	}
}

// writeConfig writes selfheal.yml for t: config, opted in to
// requireLabel's containers alone (optedIn).
func writeConfig(t testing.TB, requireLabel, config string) string {
	t.Helper()
	return writeFile(t, "selfheal.yml", optedIn(t, config, requireLabel))
}
