package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/yaml"

	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
)

// newResultFields are the result fields that schema version 2 added: each must be mapped by the index template.
var newResultFields = []string{
	"tenant", "tenantId", "requestor", "requestorComment", "actionCreatedAt", "actionUpdatedAt",
	"commandStartedAt", "commandEndedAt", "eventTime", "relayVersion",
}

// setByShippers are index template fields that are not result fields: the shipper configurations set them.
var setByShippers = []string{"@timestamp"}

// schemaFields returns every property path of the result schema ("script.outputObject.sha256"), and which of
// them are leaves (no properties of their own).
func schemaFields(t *testing.T) (all, leaves map[string]bool) {
	t.Helper()
	b, err := os.ReadFile("../schemas/result.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	defs, _ := s["$defs"].(map[string]any)
	all, leaves = map[string]bool{}, map[string]bool{}
	var walk func(prefix string, node map[string]any)
	walk = func(prefix string, node map[string]any) {
		if ref, ok := node["$ref"].(string); ok {
			def, ok := defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
			if !ok {
				t.Fatalf("schema: unresolved $ref %q", ref)
			}
			node = def
		}
		props, ok := node["properties"].(map[string]any)
		if !ok {
			if prefix != "" {
				leaves[prefix] = true
			}
			return
		}
		for name, p := range props {
			full := name
			if prefix != "" {
				full = prefix + "." + name
			}
			all[full] = true
			walk(full, p.(map[string]any))
		}
	}
	walk("", s)
	if len(all) < 20 {
		t.Fatalf("found only %d fields in the result schema", len(all))
	}
	return all, leaves
}

// templateField is one mapped field of the index template.
type templateField struct {
	typ, aliasPath string
}

// templateFields flattens the index template's mappings into dotted names.
func templateFields(t *testing.T) (map[string]templateField, []string) {
	t.Helper()
	var tpl struct {
		IndexPatterns []string `json:"index_patterns"`
		Template      struct {
			Mappings struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"mappings"`
		} `json:"template"`
	}
	b, err := os.ReadFile("siem/elasticsearch-index-template.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tpl); err != nil {
		t.Fatalf("siem/elasticsearch-index-template.json: %v", err)
	}
	out := map[string]templateField{}
	var walk func(prefix string, props map[string]json.RawMessage)
	walk = func(prefix string, props map[string]json.RawMessage) {
		for name, raw := range props {
			var f struct {
				Type       string                     `json:"type"`
				Path       string                     `json:"path"`
				Properties map[string]json.RawMessage `json:"properties"`
			}
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatalf("index template field %s%s: %v", prefix, name, err)
			}
			if f.Properties != nil {
				walk(prefix+name+".", f.Properties)
				continue
			}
			if f.Type == "" {
				t.Errorf("index template field %s%s has no type", prefix, name)
			}
			out[prefix+name] = templateField{typ: f.Type, aliasPath: f.Path}
		}
	}
	walk("", tpl.Template.Mappings.Properties)
	if len(out) < 20 || len(tpl.IndexPatterns) == 0 {
		t.Fatalf("index template: %d fields, index_patterns %v", len(out), tpl.IndexPatterns)
	}
	return out, tpl.IndexPatterns
}

// ecsRow is one row of the ECS mapping table.
type ecsRow struct {
	fields []string
	typ    string
	ecs    string
	how    string
}

var backticked = regexp.MustCompile("`([^`]+)`")

// ecsTable reads the mapping table of a markdown file: the lines from its header row to the first line that
// is not a table row.
func ecsTable(t *testing.T, file string) (rows []ecsRow, text string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if len(lines) == 0 && !strings.HasPrefix(line, "| lr-relay field |") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		lines = append(lines, line)
	}
	if len(lines) < 3 {
		t.Fatalf("%s: no ECS mapping table (a table whose header starts with \"| lr-relay field |\")", file)
	}
	for _, line := range lines[2:] {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			t.Fatalf("%s: row %q has %d cells, want 4", file, line, len(cells))
		}
		r := ecsRow{typ: strings.TrimSpace(strings.Split(cells[1], ",")[0]), how: strings.TrimSpace(cells[3])}
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			r.fields = append(r.fields, m[1])
		}
		if m := backticked.FindStringSubmatch(cells[2]); m != nil {
			r.ecs = m[1]
		}
		if len(r.fields) == 0 {
			t.Errorf("%s: row %q names no field", file, line)
		}
		rows = append(rows, r)
	}
	return rows, strings.Join(lines, "\n")
}

// TestSIEMFieldsExist checks the index template and the ECS table against the result schema: every field they
// name is a result field, every result field is mapped, the table's types are the template's, and each ECS
// alias of the template is a row of the table.
func TestSIEMFieldsExist(t *testing.T) {
	all, leaves := schemaFields(t)
	known := func(f string) bool { return all[f] }
	tpl, _ := templateFields(t)
	rows, table := ecsTable(t, "siem/README.md")

	t.Run("index template fields are result fields", func(t *testing.T) {
		for name, f := range tpl {
			switch {
			case f.typ == "alias":
				if !known(f.aliasPath) {
					t.Errorf("alias %s points to %q, which is not a result field", name, f.aliasPath)
				}
				if _, ok := tpl[f.aliasPath]; !ok {
					t.Errorf("alias %s points to %q, which the template does not map", name, f.aliasPath)
				}
			case slices.Contains(setByShippers, name):
			case !known(name):
				t.Errorf("index template maps %s, which is not a result field", name)
			}
		}
		for f := range leaves {
			if _, ok := tpl[f]; !ok {
				t.Errorf("result field %s is not in the index template", f)
			}
		}
		for _, f := range newResultFields {
			if _, ok := tpl[f]; !ok {
				t.Errorf("new result field %s is not in the index template", f)
			}
		}
		for _, f := range []string{"script.outputJson", "params"} {
			if tpl[f].typ != "flattened" {
				t.Errorf("%s is mapped as %q, want flattened (arbitrary JSON must not cause mapping conflicts)", f, tpl[f].typ)
			}
		}
		for _, f := range []string{"eventTime", "relayedAt", "actionCreatedAt", "actionUpdatedAt", "commandStartedAt", "commandEndedAt", "@timestamp"} {
			if tpl[f].typ != "date" {
				t.Errorf("%s is mapped as %q, want date", f, tpl[f].typ)
			}
		}
		for _, f := range []string{"actionId", "tenantId", "machineId", "source.stream", "file.sha256", "script.outputObject.sha256"} {
			if tpl[f].typ != "keyword" {
				t.Errorf("%s is mapped as %q, want keyword", f, tpl[f].typ)
			}
		}
	})

	t.Run("ECS table fields are result fields", func(t *testing.T) {
		inTable := map[string]ecsRow{}
		for _, r := range rows {
			for _, f := range r.fields {
				if !known(f) {
					t.Errorf("the ECS table names %s, which is not a result field", f)
				}
				if got := tpl[f].typ; got != r.typ {
					t.Errorf("the ECS table says %s is %s, the index template maps it as %q", f, r.typ, got)
				}
				inTable[f] = r
			}
		}
		for name, f := range tpl {
			if f.typ != "alias" && !slices.Contains(setByShippers, name) {
				if _, ok := inTable[name]; !ok {
					t.Errorf("%s is in the index template but not in the ECS table", name)
				}
			}
		}
		aliases := map[string]string{}
		for name, f := range tpl {
			if f.typ == "alias" {
				aliases[name] = f.aliasPath
			}
		}
		for _, r := range rows {
			if r.how != "alias" {
				continue
			}
			if len(r.fields) != 1 || aliases[r.ecs] != r.fields[0] {
				t.Errorf("the ECS table maps %v to %s as an alias; the index template has %s -> %q", r.fields, r.ecs, r.ecs, aliases[r.ecs])
			}
			delete(aliases, r.ecs)
		}
		for name, p := range aliases {
			t.Errorf("the index template's alias %s -> %s is not a row of the ECS table", name, p)
		}
	})

	t.Run("README carries the same table", func(t *testing.T) {
		_, readme := ecsTable(t, "../README.md")
		if readme != table {
			t.Error("the ECS table in README.md differs from deploy/siem/README.md: copy it again")
		}
	})
}

// propsConf reads the stanzas of a Splunk .conf file.
func propsConf(t *testing.T, file string) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	var cur map[string]string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			cur = map[string]string{}
			out[strings.Trim(line, "[]")] = cur
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || cur == nil {
				t.Fatalf("%s:%d: not a key = value line in a stanza: %q", file, i+1, line)
			}
			cur[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// TestSIEMShipperConfigs parses the shipper configurations, the Splunk stanza and the shippers' consumer, and
// checks that they agree with each other, with the index template and with deploy/nats. The consumer is
// created on an embedded server. (The shippers themselves are not run.)
func TestSIEMShipperConfigs(t *testing.T) {
	f := loadNATS(t)
	_, patterns := templateFields(t)
	indexMatches := func(index string) bool {
		for _, p := range patterns {
			if ok, _ := path.Match(p, index); ok {
				return true
			}
		}
		return false
	}

	var consumer jetstream.ConsumerConfig
	decodeStrict(t, "siem/consumer-siem.json", &consumer)
	if consumer.Durable == "" || consumer.DeliverSubject != "" || consumer.AckPolicy != jetstream.AckExplicitPolicy {
		t.Errorf("siem consumer: got durable %q deliver_subject %q ack %v, want a durable pull consumer with explicit acks",
			consumer.Durable, consumer.DeliverSubject, consumer.AckPolicy)
	}
	if !slices.Equal([]string{consumer.FilterSubject}, f.results.Subjects) {
		t.Errorf("siem consumer filter %q, want the results stream's subjects %v", consumer.FilterSubject, f.results.Subjects)
	}

	props := propsConf(t, "siem/splunk/props.conf")
	if len(props) != 1 {
		t.Fatalf("props.conf: got %d stanzas, want 1", len(props))
	}
	var sourcetype string
	for st, kv := range props {
		sourcetype = st
		if kv["KV_MODE"] != "json" {
			t.Errorf("props.conf: KV_MODE %q, want json", kv["KV_MODE"])
		}
		if !strings.Contains(kv["TIME_PREFIX"], "eventTime") || kv["TIME_FORMAT"] == "" || kv["TZ"] != "UTC" {
			t.Errorf("props.conf: TIME_PREFIX %q TIME_FORMAT %q TZ %q, want eventTime parsed as UTC", kv["TIME_PREFIX"], kv["TIME_FORMAT"], kv["TZ"])
		}
		// The largest result lr-relay starts with at the default LR_INLINE_MAX_BYTES: 4 x 64 KiB + 64 KiB.
		if n, err := strconv.Atoi(kv["TRUNCATE"]); err != nil || n < 4*65536+65536 {
			t.Errorf("props.conf: TRUNCATE %q, want at least %d", kv["TRUNCATE"], 4*65536+65536)
		}
		if kv["SHOULD_LINEMERGE"] != "false" {
			t.Errorf("props.conf: SHOULD_LINEMERGE %q, want false (one JSON event per line)", kv["SHOULD_LINEMERGE"])
		}
	}

	t.Run("vector", func(t *testing.T) {
		var v struct {
			Sources map[string]struct {
				Type      string `json:"type"`
				JetStream struct {
					Stream   string `json:"stream"`
					Consumer string `json:"consumer"`
				} `json:"jetstream"`
			} `json:"sources"`
			Transforms map[string]struct {
				Type   string   `json:"type"`
				Inputs []string `json:"inputs"`
				Source string   `json:"source"`
			} `json:"transforms"`
			Sinks map[string]struct {
				Type       string   `json:"type"`
				Inputs     []string `json:"inputs"`
				Sourcetype string   `json:"sourcetype"`
				IDKey      string   `json:"id_key"`
				Bulk       struct {
					Index string `json:"index"`
				} `json:"bulk"`
				Acknowledgements struct {
					Enabled bool `json:"enabled"`
				} `json:"acknowledgements"`
			} `json:"sinks"`
		}
		readYAML(t, "siem/vector.yaml", &v)
		var natsSources int
		for name, s := range v.Sources {
			if s.Type != "nats" {
				continue
			}
			natsSources++
			if s.JetStream.Stream != f.results.Name || s.JetStream.Consumer != consumer.Durable {
				t.Errorf("source %s reads %s/%s, want %s/%s", name, s.JetStream.Stream, s.JetStream.Consumer, f.results.Name, consumer.Durable)
			}
		}
		if natsSources != 1 {
			t.Errorf("got %d nats sources, want 1", natsSources)
		}
		types := map[string]bool{}
		for name, s := range v.Sinks {
			types[s.Type] = true
			if !s.Acknowledgements.Enabled {
				t.Errorf("sink %s: acknowledgements not enabled (JetStream would get its ack before the SIEM has the event)", name)
			}
			switch s.Type {
			case "splunk_hec_logs":
				if s.Sourcetype != sourcetype {
					t.Errorf("sink %s: sourcetype %q, want %q of props.conf", name, s.Sourcetype, sourcetype)
				}
			case "elasticsearch":
				if !indexMatches(s.Bulk.Index) {
					t.Errorf("sink %s: index %q does not match the index template's patterns %v", name, s.Bulk.Index, patterns)
				}
				if s.IDKey == "" {
					t.Errorf("sink %s: no id_key: a redelivered result would be a second document", name)
				}
			}
		}
		if !types["splunk_hec_logs"] || !types["elasticsearch"] {
			t.Errorf("got sinks of types %v, want splunk_hec_logs and elasticsearch", types)
		}
		for name, tr := range v.Transforms {
			if tr.Type == "remap" && !strings.Contains(tr.Source, "eventTime") {
				t.Errorf("transform %s does not use eventTime as the event's time", name)
			}
		}
	})

	t.Run("redpanda connect", func(t *testing.T) {
		var c struct {
			Input struct {
				NATSJetStream struct {
					URLs    []string `json:"urls"`
					Stream  string   `json:"stream"`
					Durable string   `json:"durable"`
					Bind    bool     `json:"bind"`
				} `json:"nats_jetstream"`
			} `json:"input"`
			Output struct {
				Broker struct {
					Pattern string `json:"pattern"`
					Outputs []struct {
						SplunkHEC *struct {
							URL             string `json:"url"`
							EventSourcetype string `json:"event_sourcetype"`
						} `json:"splunk_hec"`
						Elasticsearch *struct {
							Index string `json:"index"`
							ID    string `json:"id"`
						} `json:"elasticsearch_v8"`
						Processors []map[string]string `json:"processors"`
					} `json:"outputs"`
				} `json:"broker"`
			} `json:"output"`
		}
		readYAML(t, "siem/redpanda-connect.yaml", &c)
		in := c.Input.NATSJetStream
		if len(in.URLs) == 0 || in.Stream != f.results.Name || in.Durable != consumer.Durable || !in.Bind {
			t.Errorf("input: urls %v stream %q durable %q bind %v, want %s/%s bound", in.URLs, in.Stream, in.Durable, in.Bind, f.results.Name, consumer.Durable)
		}
		if c.Output.Broker.Pattern != "fan_out" {
			t.Errorf("broker pattern %q, want fan_out (acknowledged once every output has the event)", c.Output.Broker.Pattern)
		}
		var splunk, es bool
		for _, o := range c.Output.Broker.Outputs {
			usesEventTime := false
			for _, p := range o.Processors {
				usesEventTime = usesEventTime || strings.Contains(p["mapping"], "eventTime")
			}
			switch {
			case o.SplunkHEC != nil:
				splunk = true
				if o.SplunkHEC.EventSourcetype != sourcetype || !strings.HasSuffix(o.SplunkHEC.URL, "/services/collector/event") {
					t.Errorf("splunk_hec: sourcetype %q url %q, want %q and the HEC event endpoint", o.SplunkHEC.EventSourcetype, o.SplunkHEC.URL, sourcetype)
				}
			case o.Elasticsearch != nil:
				es = true
				if !indexMatches(o.Elasticsearch.Index) || !strings.Contains(o.Elasticsearch.ID, "actionId") {
					t.Errorf("elasticsearch_v8: index %q id %q, want an index of %v and the command's id", o.Elasticsearch.Index, o.Elasticsearch.ID, patterns)
				}
			default:
				t.Error("an output that is neither splunk_hec nor elasticsearch_v8")
			}
			if !usesEventTime {
				t.Error("an output whose processors do not set the time from eventTime")
			}
		}
		if !splunk || !es {
			t.Errorf("got splunk_hec %v, elasticsearch_v8 %v, want both", splunk, es)
		}
	})

	t.Run("consumer is accepted by a server", func(t *testing.T) {
		js := embeddedtest.JetStream(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		results := f.results
		results.Replicas = 1
		if _, err := js.CreateStream(ctx, results); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateConsumer(ctx, results.Name, consumer); err != nil {
			t.Fatalf("creating the siem consumer: %v", err)
		}
	})
}

// readYAML decodes a YAML file into v, rejecting a document that does not parse. Unknown fields are allowed:
// the target types name only what the test checks.
func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}
