// Decoding errors: yaml.v3 reports unknown keys and mistyped values in Go
// terms ("field x not found in type policy.verify", "cannot unmarshal !!str
// `5x` into Duration"); cleanYAMLError rewrites them in the file's terms,
// naming the line, the remediation and the section. TestYAMLErrors pins the
// wording yaml.v3 uses, so an upgrade that changes it fails there.

package policy

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// knownKeys reports the keys of mapping n that are not yaml fields of v,
// looking into nested structs (but not into types with an unmarshaler of
// their own, which check themselves).
func knownKeys(n *yaml.Node, v any, where string) error {
	var errs []string
	checkKeys(n, reflect.TypeOf(v), where, &errs)
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func checkKeys(n *yaml.Node, t reflect.Type, where string, errs *[]string) {
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			fields[name] = t.Field(i).Type
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		ft, ok := fields[k.Value]
		if !ok {
			*errs = append(*errs, fmt.Sprintf("line %d: field %s not found in type policy.%s", k.Line, k.Value, where))
			continue
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(unmarshalerType) {
			checkKeys(n.Content[i+1], ft, k.Value, errs)
		}
	}
}

// span is the lines a remediation occupies in the file.
type span struct {
	from int
	name string
}

// remediationSpans finds where each remediation starts, so a decoding error
// at a line can name the remediation it is in.
func remediationSpans(doc *yaml.Node) []span {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	root := doc.Content[0]
	var spans []span
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "remediations" || root.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for _, item := range root.Content[i+1].Content {
			s := span{from: item.Line}
			for j := 0; item.Kind == yaml.MappingNode && j+1 < len(item.Content); j += 2 {
				if item.Content[j].Value == "name" {
					s.name = item.Content[j+1].Value
				}
			}
			spans = append(spans, s)
		}
	}
	return spans
}

var (
	yamlLine     = regexp.MustCompile(`^\s*line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type (?:policy|probe)\.(\w+)$`)
	badValue     = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

var sectionNames = map[string]string{
	"Config": "the top level", "Webhook": "webhook", "BasicAuth": "webhook.basic_auth",
	"Engine": "engine", "StormBrake": "engine.storm_brake", "CriticalEvents": "engine.critical_events", "Targets": "targets",
	"Docker": "targets.docker", "remediation": "remediation", "verify": "verify",
	"Exporter": "exporter", "Probe": "exporter.probes",
	"action": "action",
}

// cleanYAMLError rewrites yaml.v3's messages into "line N: remediation
// "name": unknown field "x" in verify" form, one problem a line.
func cleanYAMLError(err error, spans []span) error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		line := 0
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ = strconv.Atoi(sm[1])
			m = sm[2]
		}
		if sm := unknownField.FindStringSubmatch(m); sm != nil {
			where := sectionNames[sm[2]]
			if where == "" {
				where = sm[2]
			}
			m = fmt.Sprintf("unknown field %q in %s", sm[1], where)
		} else if sm := badValue.FindStringSubmatch(m); sm != nil {
			m = fmt.Sprintf("cannot use %s %q as %s", sm[1], sm[2], goTypeName(sm[3]))
		}
		if line > 0 {
			prefix := fmt.Sprintf("line %d: ", line)
			if name, ok := remediationAt(spans, line); ok {
				prefix += fmt.Sprintf("remediation %q: ", name)
			}
			m = prefix + m
		}
		out = append(out, m)
	}
	return errors.New(strings.Join(out, "\n"))
}

func goTypeName(t string) string {
	switch {
	case t == "Duration" || t == "time.Duration":
		return "a duration (like 30s, 5m, 1h)"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case t == "int" || t == "int64":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	}
	return "a " + strings.TrimPrefix(t, "policy.")
}

func remediationAt(spans []span, line int) (string, bool) {
	for i := len(spans) - 1; i >= 0; i-- {
		if line >= spans[i].from {
			if spans[i].name == "" {
				return fmt.Sprintf("#%d", i+1), true
			}
			return spans[i].name, true
		}
	}
	return "", false
}

// onlyUnknownFields reports whether a decoding error is nothing but
// unknown fields, after which the rest of the file is decoded.
func onlyUnknownFields(err error) bool {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return false
	}
	for _, m := range te.Errors {
		g := yamlLine.FindStringSubmatch(m)
		if g == nil || !unknownField.MatchString(g[2]) {
			return false
		}
	}
	return true
}
