package schemas

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/result"
)

const guid = "7f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"

func newValidator(t testing.TB) *Validator {
	t.Helper()
	v, err := New()
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return v
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// check runs one validation and compares the outcome: wantDetail "" means the document must be valid;
// otherwise the error must be a *ValidationError whose Detail contains wantDetail.
func check(t *testing.T, validate func([]byte) error, doc []byte, wantDetail string) {
	t.Helper()
	err := validate(doc)
	if wantDetail == "" {
		if err != nil {
			t.Fatalf("got error %v, want valid", err)
		}
		return
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got error %v (%T), want *ValidationError containing %q", err, err, wantDetail)
	}
	if !strings.Contains(ve.Detail, wantDetail) {
		t.Errorf("got Detail %q, want it to contain %q", ve.Detail, wantDetail)
	}
	if strings.ContainsAny(ve.Detail, "\n\r") {
		t.Errorf("Detail %q spans several lines, want one", ve.Detail)
	}
}

func TestValidateEvent(t *testing.T) {
	v := newValidator(t)
	tests := []struct {
		name       string
		doc        string
		wantDetail string
	}{
		{name: "doc example", doc: string(readTestdata(t, "event-doc-example.json"))},
		{name: "only id", doc: `{"id":"` + guid + `"}`},
		{name: "uppercase guid", doc: `{"id":"` + strings.ToUpper(guid) + `"}`},
		{name: "tenant and unknown fields", doc: `{"id":"` + guid + `","tenantId":"contoso","futureField":{"x":1},
			"commands":[{"index":0,"newThing":true,"command":{"type":"GetFile","extra":1,
			"params":[{"key":"Path","value":"C:\\a.txt","more":null}]}}]}`},
		{name: "nulls where the API is loose", doc: `{"id":"` + guid + `","tenantId":null,"type":null,"status":null,
			"machineId":null,"computerDnsName":null,"requestor":null,"requestorComment":null,
			"creationDateTimeUtc":null,"lastUpdateDateTimeUtc":null,"scope":null,"externalId":null,
			"commands":[{"index":0,"startTime":null,"endTime":null,"commandStatus":null,"errors":null,
			"command":{"type":null,"params":null}},{"index":1,"command":null}]}`},
		{name: "empty commands", doc: `{"id":"` + guid + `","commands":[]}`},
		{name: "large index", doc: `{"id":"` + guid + `","commands":[{"index":2147483647}]}`},

		{name: "missing id", doc: `{"type":"LiveResponse"}`, wantDetail: "at /: missing required field 'id'"},
		{name: "non-GUID id", doc: `{"id":"not-a-guid"}`, wantDetail: "at /id: must match ^[0-9a-fA-F]{8}"},
		{name: "guid with braces", doc: `{"id":"{` + guid + `}"}`, wantDetail: "at /id: must match"},
		{name: "numeric id", doc: `{"id":42}`, wantDetail: "at /id: must be string, got number"},
		{name: "null id", doc: `{"id":null}`, wantDetail: "at /id: must be string, got null"},
		{name: "commands not an array", doc: `{"id":"` + guid + `","commands":{"index":0}}`,
			wantDetail: "at /commands: must be array, got object"},
		{name: "commands null", doc: `{"id":"` + guid + `","commands":null}`,
			wantDetail: "at /commands: must be array, got null"},
		{name: "index -1", doc: `{"id":"` + guid + `","commands":[{"index":-1}]}`,
			wantDetail: "at /commands/0/index: must be >= 0, got -1"},
		{name: "index not an integer", doc: `{"id":"` + guid + `","commands":[{"index":0},{"index":1.5}]}`,
			wantDetail: "at /commands/1/index: must be integer, got number"},
		{name: "index as string", doc: `{"id":"` + guid + `","commands":[{"index":"0"}]}`,
			wantDetail: "at /commands/0/index: must be integer, got string"},
		{name: "index too large", doc: `{"id":"` + guid + `","commands":[{"index":99999999999999999999}]}`,
			wantDetail: "at /commands/0/index: must be <= 2147483647, got 99999999999999999999"},
		{name: "index missing", doc: `{"id":"` + guid + `","commands":[{"commandStatus":"Completed"}]}`,
			wantDetail: "at /commands/0: missing required field 'index'"},
		{name: "errors not strings", doc: `{"id":"` + guid + `","commands":[{"index":0,"errors":[1]}]}`,
			wantDetail: "at /commands/0/errors/0: must be null or string, got number"},
		{name: "param value not a string", doc: `{"id":"` + guid + `","commands":[{"index":0,"command":{"params":[{"key":"Args","value":3}]}}]}`,
			wantDetail: "at /commands/0/command/params/0/value: must be null or string, got number"},
		{name: "not an object", doc: `["` + guid + `"]`, wantDetail: "at /: must be object, got array"},
		{name: "several problems are all named", doc: `{"id":"x","commands":[{"index":-1},{"index":-2},{"index":-3}]}`,
			wantDetail: "; and 1 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, v.ValidateEvent, []byte(tt.doc), tt.wantDetail)
		})
	}
}

func TestValidateEventNotJSON(t *testing.T) {
	v := newValidator(t)
	tests := []struct {
		name string
		doc  string
	}{
		{name: "empty", doc: ``},
		{name: "truncated", doc: `{"id":"` + guid},
		{name: "trailing data", doc: `{"id":"` + guid + `"} {}`},
		{name: "raw newline in string", doc: "{\"id\":\"" + guid + "\",\"x\":\"a\nb\"}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.ValidateEvent([]byte(tt.doc))
			var je *JSONError
			if !errors.As(err, &je) {
				t.Fatalf("got error %v (%T), want *JSONError", err, err)
			}
			if je.Schema != EventSchema {
				t.Errorf("got Schema %q, want %q", je.Schema, EventSchema)
			}
			var ve *ValidationError
			if errors.As(err, &ve) {
				t.Errorf("got a *ValidationError too, want only *JSONError")
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	v := newValidator(t)
	err := v.ValidateEvent([]byte(`{"id":"` + guid + `","commands":[{"index":-1}]}`))
	got := err.Error()
	want := "event does not match its schema: at /commands/0/index: must be >= 0, got -1"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValidationErrorQuotesLittle(t *testing.T) {
	v := newValidator(t)
	long := strings.Repeat("A", 10000) + `\nsecond line`
	err := v.ValidateEvent([]byte(`{"id":"` + long + `"}`))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want *ValidationError", err)
	}
	if len(ve.Detail) > 300 {
		t.Errorf("got Detail of %d bytes, want at most 300: %q", len(ve.Detail), ve.Detail)
	}
	if strings.Contains(ve.Detail, "second line") || strings.Contains(ve.Detail, "\n") {
		t.Errorf("got Detail %q, want the value cut to one short line", ve.Detail)
	}
}

// fullResult is a result.Event with every field set, nested objects included, so that a field renamed in Go
// but not in the schema (or the reverse) fails validation.
func fullResult() result.Event {
	exit := 0
	sha := strings.Repeat("ab", 32)
	return result.Event{
		SchemaVersion:    result.SchemaVersion,
		ActionID:         guid,
		Tenant:           "contoso",
		TenantID:         "8c1d2e3f-0000-4000-8000-000000000001",
		Index:            1,
		CommandType:      "RunScript",
		CommandStatus:    "Completed",
		Params:           map[string]string{"ScriptName": "minidump.ps1", "Args": "OfficeClickToRun"},
		Errors:           []string{"warning"},
		ActionStatus:     "Succeeded",
		MachineID:        strings.Repeat("a1", 20),
		ComputerDNSName:  "host.contoso.local",
		Requestor:        "analyst@contoso.com",
		RequestorComment: "INC-1234",
		ActionCreatedAt:  ptr(time.Date(2024, 5, 6, 7, 0, 0, 0, time.UTC)),
		ActionUpdatedAt:  ptr(time.Date(2024, 5, 6, 7, 5, 0, 0, time.UTC)),
		CommandStartedAt: ptr(time.Date(2024, 5, 6, 7, 1, 0, 0, time.UTC)),
		CommandEndedAt:   ptr(time.Date(2024, 5, 6, 7, 2, 0, 0, time.UTC)),
		EventTime:        time.Date(2024, 5, 6, 7, 2, 0, 0, time.UTC),
		FieldsTruncated:  true,
		RelayVersion:     "v1.2.3",
		Outcome:          result.OutcomeRelayed,
		Script: &result.Script{
			ScriptName:        "minidump.ps1",
			ExitCode:          &exit,
			TranscriptPath:    `C:\ProgramData\PSScript_Transcript.txt`,
			Output:            "C:\\windows\\TEMP\\OfficeClickToRun.dmp.zip\n51 MB",
			OutputJSON:        map[string]any{"k": []any{1, "two", nil}},
			OutputJSONOmitted: true,
			Errors:            "none",
			ErrorsBytes:       1 << 18,
			ErrorsTruncated:   true,
			ErrorsObject:      &result.ObjectRef{Bucket: "lr-results", Name: "contoso/" + guid + "/1/errors", Size: 1 << 18, SHA256: sha},
			TrailingNULs:      3,
			InvalidUTF8:       true,
			OutputBytes:       1 << 20,
			OutputTruncated:   true,
			OutputObject:      &result.ObjectRef{Bucket: "lr-results", Name: guid + "/1/output", Size: 1 << 20, SHA256: sha},
		},
		File: &result.File{
			Name:            "a.txt",
			CompressedBytes: 10,
			Bytes:           20,
			SHA256:          sha,
			ContentBase64:   base64.StdEncoding.EncodeToString([]byte("hello")),
			Inline:          true,
			NotInlineReason: "stored",
			Object:          &result.ObjectRef{Bucket: "lr-results", Name: guid + "/1/file", Size: 20, SHA256: sha},
		},
		Problem: &result.Problem{
			Code:         "invalid_json",
			Message:      "raw line break in a string",
			RawBase64:    base64.StdEncoding.EncodeToString([]byte("{\"a\n")),
			RawTruncated: true,
		},
		Source:    &result.Source{Stream: "LIVE_RESPONSE", Sequence: 42},
		RelayedAt: time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600)),
	}
}

func ptr[T any](v T) *T { return &v }

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// patch marshals ev, applies edit to its generic JSON form and marshals it again.
func patch(t testing.TB, ev result.Event, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(mustMarshal(t, ev), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	return mustMarshal(t, m)
}

func TestValidateResult(t *testing.T) {
	v := newValidator(t)
	minimal := result.Event{
		SchemaVersion: result.SchemaVersion, ActionID: guid, Tenant: "default", TenantID: "t", Index: 0, CommandType: "PutFile",
		CommandStatus: "Completed", Outcome: result.OutcomeNoResult, RelayedAt: time.Now().UTC(), EventTime: time.Now().UTC(),
		RelayVersion: "dev",
	}
	obj := func(m map[string]any, k string) map[string]any { return m[k].(map[string]any) }
	tests := []struct {
		name       string
		doc        []byte
		wantDetail string
	}{
		{name: "fully populated", doc: mustMarshal(t, fullResult())},
		{name: "minimal", doc: mustMarshal(t, minimal)},
		{name: "empty command type", doc: mustMarshal(t, func() result.Event {
			e := minimal
			e.CommandType, e.CommandStatus = "", ""
			return e
		}())},
		{name: "script with nothing optional", doc: mustMarshal(t, func() result.Event {
			e := minimal
			e.Outcome, e.Script = result.OutcomeRelayed, &result.Script{}
			return e
		}())},
		{name: "every outcome", doc: nil}, // expanded below

		{name: "unknown top-level field", doc: patch(t, fullResult(), func(m map[string]any) { m["extra"] = 1 }),
			wantDetail: "at /: unknown field 'extra' not allowed"},
		{name: "unknown script field", doc: patch(t, fullResult(), func(m map[string]any) { obj(m, "script")["exit_code"] = 0 }),
			wantDetail: "at /script: unknown field 'exit_code' not allowed"},
		{name: "unknown object ref field", doc: patch(t, fullResult(), func(m map[string]any) { obj(obj(m, "file"), "object")["digest"] = "x" }),
			wantDetail: "at /file/object: unknown field 'digest' not allowed"},
		{name: "unknown source field", doc: patch(t, fullResult(), func(m map[string]any) { obj(m, "source")["subject"] = "x" }),
			wantDetail: "at /source: unknown field 'subject' not allowed"},
		{name: "missing relayedAt", doc: patch(t, minimal, func(m map[string]any) { delete(m, "relayedAt") }),
			wantDetail: "at /: missing required field 'relayedAt'"},
		{name: "relayedAt not a date-time", doc: patch(t, minimal, func(m map[string]any) { m["relayedAt"] = "yesterday" }),
			wantDetail: "at /relayedAt: must be a valid date-time, got 'yesterday'"},
		{name: "unknown outcome", doc: patch(t, minimal, func(m map[string]any) { m["outcome"] = "done" }),
			wantDetail: "at /outcome: must be one of relayed, no_result, parse_error, too_large, error, got 'done'"},
		{name: "schema version 1", doc: patch(t, minimal, func(m map[string]any) { m["schemaVersion"] = 1 }),
			wantDetail: "at /schemaVersion: must be 2, got '1'"},
		{name: "missing tenant", doc: patch(t, minimal, func(m map[string]any) { delete(m, "tenant") }),
			wantDetail: "at /: missing required field 'tenant'"},
		{name: "eventTime not a date-time", doc: patch(t, minimal, func(m map[string]any) { m["eventTime"] = "2024-05-06 07:08" }),
			wantDetail: "at /eventTime: must be a valid date-time"},
		{name: "negative index", doc: patch(t, minimal, func(m map[string]any) { m["index"] = -1 }),
			wantDetail: "at /index: must be >= 0, got -1"},
		{name: "uppercase sha256", doc: patch(t, fullResult(), func(m map[string]any) { obj(m, "file")["sha256"] = strings.Repeat("AB", 32) }),
			wantDetail: "at /file/sha256: must match ^[0-9a-f]{64}$"},
		{name: "object store digest form", doc: patch(t, fullResult(), func(m map[string]any) {
			obj(obj(m, "script"), "outputObject")["sha256"] = "SHA-256=q83vEjRWeJCrze8SNFZ4kA=="
		}), wantDetail: "at /script/outputObject/sha256: must match"},
		{name: "object ref without digest", doc: patch(t, fullResult(), func(m map[string]any) { delete(obj(obj(m, "file"), "object"), "sha256") }),
			wantDetail: "at /file/object: missing required field 'sha256'"},
		{name: "content not base64", doc: patch(t, fullResult(), func(m map[string]any) { obj(m, "file")["contentBase64"] = "not base64!" }),
			wantDetail: "at /file/contentBase64: must be base64 encoded"},
		{name: "problem without code", doc: patch(t, fullResult(), func(m map[string]any) { delete(obj(m, "problem"), "code") }),
			wantDetail: "at /problem: missing required field 'code'"},
		{name: "non-GUID action id", doc: patch(t, minimal, func(m map[string]any) { m["actionId"] = "a1" }),
			wantDetail: "at /actionId: must match"},
		{name: "params value not a string", doc: patch(t, fullResult(), func(m map[string]any) { obj(m, "params")["Args"] = 1 }),
			wantDetail: "at /params/Args: must be string, got number"},
	}
	for _, tt := range tests {
		if tt.doc == nil {
			for _, o := range []string{result.OutcomeRelayed, result.OutcomeNoResult, result.OutcomeParseError, result.OutcomeTooLarge} {
				t.Run("outcome "+o, func(t *testing.T) {
					e := minimal
					e.Outcome = o
					check(t, v.ValidateResult, mustMarshal(t, e), "")
				})
			}
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			check(t, v.ValidateResult, tt.doc, tt.wantDetail)
		})
	}
}

// TestResultSchemaMatchesGoTypes compares, type by type, the JSON names of the Go fields with the schema's
// properties, and the fields without omitempty with the schema's required list, so that a field added to
// result.Event without the schema (or the reverse) fails here even when no sample sets it.
func TestResultSchemaMatchesGoTypes(t *testing.T) {
	b, err := fs.ReadFile(files, ResultFile)
	if err != nil {
		t.Fatal(err)
	}
	var sch struct {
		Properties           map[string]json.RawMessage `json:"properties"`
		Required             []string                   `json:"required"`
		AdditionalProperties *bool                      `json:"additionalProperties"`
		Defs                 map[string]struct {
			Properties           map[string]json.RawMessage `json:"properties"`
			Required             []string                   `json:"required"`
			AdditionalProperties *bool                      `json:"additionalProperties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &sch); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		typ   reflect.Type
		props map[string]json.RawMessage
		req   []string
		addl  *bool
	}{
		{name: "Event", typ: reflect.TypeFor[result.Event](), props: sch.Properties, req: sch.Required, addl: sch.AdditionalProperties},
	}
	for goName, def := range map[string]string{"Script": "script", "File": "file", "ObjectRef": "objectRef", "Problem": "problem", "Source": "source"} {
		d, ok := sch.Defs[def]
		if !ok {
			t.Fatalf("schema has no $defs/%s", def)
		}
		var typ reflect.Type
		switch goName {
		case "Script":
			typ = reflect.TypeFor[result.Script]()
		case "File":
			typ = reflect.TypeFor[result.File]()
		case "ObjectRef":
			typ = reflect.TypeFor[result.ObjectRef]()
		case "Problem":
			typ = reflect.TypeFor[result.Problem]()
		case "Source":
			typ = reflect.TypeFor[result.Source]()
		}
		tests = append(tests, struct {
			name  string
			typ   reflect.Type
			props map[string]json.RawMessage
			req   []string
			addl  *bool
		}{name: goName, typ: typ, props: d.Properties, req: d.Required, addl: d.AdditionalProperties})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var names, required []string
			for f := range tt.typ.Fields() {
				tag := f.Tag.Get("json")
				name, opts, _ := strings.Cut(tag, ",")
				if name == "-" || !f.IsExported() {
					continue
				}
				names = append(names, name)
				if !slices.Contains(strings.Split(opts, ","), "omitempty") {
					required = append(required, name)
				}
			}
			var props []string
			for p := range tt.props {
				props = append(props, p)
			}
			sort.Strings(names)
			sort.Strings(props)
			sort.Strings(required)
			req := slices.Clone(tt.req)
			sort.Strings(req)
			if !slices.Equal(names, props) {
				t.Errorf("got schema properties %v, want the Go json names %v", props, names)
			}
			if !slices.Equal(required, req) {
				t.Errorf("got schema required %v, want the Go fields without omitempty %v", req, required)
			}
			if tt.addl == nil || *tt.addl {
				t.Errorf("got additionalProperties %v, want false", tt.addl)
			}
		})
	}
}

func TestValidateDeadLetter(t *testing.T) {
	v := newValidator(t)
	payload := []byte(`{"id":"nope"}`)
	full := map[string]any{
		"schemaVersion": 2, "reason": "invalid_id", "message": "id is not a GUID",
		"payloadBase64": base64.StdEncoding.EncodeToString(payload), "payloadJson": json.RawMessage(payload),
		"payloadBytes": len(payload), "payloadSha256": strings.Repeat("0a", 32), "tenant": "contoso",
		"eventTime": "2024-05-06T07:08:09.123Z", "relayVersion": "dev",
		"stream": "LIVE_RESPONSE", "sequence": 17, "deliveries": 1, "subject": "mde.liveresponse.finished",
		"actionId": "nope", "index": 2, "tenantId": "contoso", "target": "6f1e0000-0000-0000-0000-000000000000",
		"deadLetteredAt": "2024-05-06T07:08:09.123Z",
	}
	with := func(edit func(m map[string]any)) []byte {
		m := make(map[string]any, len(full))
		for k, v := range full {
			m[k] = v
		}
		edit(m)
		return mustMarshal(t, m)
	}
	tests := []struct {
		name       string
		doc        []byte
		wantDetail string
	}{
		{name: "full", doc: with(func(map[string]any) {})},
		{name: "minimal", doc: with(func(m map[string]any) {
			for _, k := range []string{"payloadJson", "actionId", "index", "tenant", "tenantId", "target"} {
				delete(m, k)
			}
		})},
		{name: "payload that was a JSON string", doc: with(func(m map[string]any) { m["payloadJson"] = "text" })},
		{name: "payload that was JSON null", doc: with(func(m map[string]any) { m["payloadJson"] = nil })},
		{name: "empty payload", doc: with(func(m map[string]any) { m["payloadBase64"] = "" })},
		{name: "payload in the object store", doc: with(func(m map[string]any) {
			m["payloadTruncated"] = true
			m["payloadObject"] = map[string]any{"bucket": "lr-results", "name": "deadletters/LIVE_RESPONSE/17", "size": 2 << 20, "sha256": strings.Repeat("0a", 32)}
		})},
		{name: "payload object without digest", doc: with(func(m map[string]any) {
			m["payloadObject"] = map[string]any{"bucket": "lr-results", "name": "x", "size": 1}
		}), wantDetail: "at /payloadObject: missing required field 'sha256'"},

		{name: "unknown reason", doc: with(func(m map[string]any) { m["reason"] = "oops" }),
			wantDetail: "at /reason: must be one of invalid_json, schema_violation"},
		{name: "missing payload", doc: with(func(m map[string]any) { delete(m, "payloadBase64") }),
			wantDetail: "at /: missing required field 'payloadBase64'"},
		{name: "payload not base64", doc: with(func(m map[string]any) { m["payloadBase64"] = string(payload) }),
			wantDetail: "at /payloadBase64: must be base64 encoded"},
		{name: "unknown field", doc: with(func(m map[string]any) { m["payload"] = "x" }),
			wantDetail: "at /: unknown field 'payload' not allowed"},
		{name: "sequence as string", doc: with(func(m map[string]any) { m["sequence"] = "17" }),
			wantDetail: "at /sequence: must be integer, got string"},
		{name: "bad timestamp", doc: with(func(m map[string]any) { m["deadLetteredAt"] = "2024-05-06 07:08:09" }),
			wantDetail: "at /deadLetteredAt: must be a valid date-time"},
		{name: "several missing", doc: with(func(m map[string]any) { delete(m, "stream"); delete(m, "subject") }),
			wantDetail: "at /: missing required fields 'stream', 'subject'"},
		{name: "input_too_large is a reason", doc: with(func(m map[string]any) { m["reason"] = "input_too_large" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, v.ValidateDeadLetter, tt.doc, tt.wantDetail)
		})
	}
}

func TestFiles(t *testing.T) {
	for _, name := range []string{EventFile, ResultFile, DeadLetterFile} {
		t.Run(name, func(t *testing.T) {
			b, err := fs.ReadFile(files, name)
			if err != nil {
				t.Fatalf("got error %v, want the embedded file", err)
			}
			var doc struct {
				Schema string `json:"$schema"`
				ID     string `json:"$id"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("got error %v, want JSON", err)
			}
			if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("got $schema %q, want draft 2020-12", doc.Schema)
			}
			if want := baseURL + name; doc.ID != want {
				t.Errorf("got $id %q, want %q", doc.ID, want)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	v := newValidator(t)
	good := mustMarshal(t, fullResult())
	done := make(chan error)
	for range 8 {
		go func() {
			var err error
			for range 50 {
				if err = v.ValidateResult(good); err != nil {
					break
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Errorf("got error %v, want valid", err)
		}
	}
}

// BenchmarkValidateResult measures the check run before every publish: a small result, and one with a 64 KiB
// inline script output (Windows paths, so full of escapes: JSON decoding dominates).
func BenchmarkValidateResult(b *testing.B) {
	v := newValidator(b)
	small := fullResult()
	large := fullResult()
	large.Script.Output = strings.Repeat("C:\\windows\\TEMP\\some\\path.txt 51 MB\n", 64<<10/36)
	large.Script.OutputJSON = nil
	for _, bc := range []struct {
		name string
		ev   result.Event
	}{{"small", small}, {"output64KiB", large}} {
		b.Run(bc.name, func(b *testing.B) {
			doc := mustMarshal(b, bc.ev)
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				if err := v.ValidateResult(doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestValidationErrorIsDeterministic(t *testing.T) {
	v := newValidator(t)
	doc := []byte(`{"id":"x","tenantId":1,"type":2,"status":3,"machineId":4,"requestor":5,"commands":[{"index":-1}]}`)
	want := v.ValidateEvent(doc).Error()
	for range 20 {
		if got := v.ValidateEvent(doc).Error(); got != want {
			t.Fatalf("got %q, want the same message every time: %q", got, want)
		}
	}
	if !strings.HasPrefix(want, "event does not match its schema: at /commands/0/index: must be >= 0, got -1; at /id: ") {
		t.Errorf("got %q, want failures in location order", want)
	}
}
