package command

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/transcript"
	"github.com/lr-relay/lr-relay/schemas"
)

var nopLog = zerolog.Nop()

const guid = "0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"

// hostile is text that JSON makes six times larger: control characters become \u00XX.
func hostile(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteByte(byte(1 + i%31))
		b.WriteString("<>&")
	}
	return b.String()[:n]
}

// scriptEvent parses a transcript the way the relay does and wraps it in a result event.
func scriptEvent(t testing.TB, transcriptJSON []byte, inlineMax, preview int, spill artifact.Opener) *result.Event {
	t.Helper()
	s, problem, err := transcript.Parse(bytes.NewReader(transcriptJSON), transcript.Options{InlineMax: inlineMax, PreviewBytes: preview, RawMax: inlineMax, Spill: spill})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	return &result.Event{SchemaVersion: result.SchemaVersion, ActionID: guid, Tenant: "contoso", TenantID: "tid", Index: 3,
		CommandType: "RunScript", CommandStatus: "Completed", Outcome: result.OutcomeRelayed, Script: s, Problem: problem,
		RelayedAt: now, EventTime: now, RelayVersion: "test"}
}

func transcriptOf(output, errors string) []byte {
	b, _ := json.Marshal(map[string]any{"script_name": "x.ps1", "exit_code": 0, "script_output": output, "script_errors": errors})
	return b
}

// TestEncodeFitsHostileOutput: the cases of the issue that were lost before, against a real Object Store.
// Each must fit the limit, validate, and keep the whole content readable from the store.
func TestEncodeFitsHostileOutput(t *testing.T) {
	js := embeddedtest.JetStream(t)
	ctx := context.Background()
	store, err := artifact.NewStore(ctx, js, artifact.StoreConfig{Bucket: "b", Replicas: 1, MaxBytes: -1, Provision: true}, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	const inline, preview, limit = 64 << 10, 4 << 10, 1<<20 - 4<<10
	jsonOut := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"items":[`)
		for i := 0; b.Len() < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"k":"` + hostile(40) + `"}`)
		}
		b.WriteString(`]}`)
		return b.String()
	}
	cases := map[string]struct{ output, errors string }{
		// Just under the inline cap, each: the marshalled event was 1.18 MB before.
		"escapes just under the inline cap": {output: hostile(inline - 10), errors: hostile(inline - 10)},
		"escape-heavy output of 150 KB":     {output: hostile(150 << 10)},
		"1 MB JSON output":                  {output: jsonOut(1 << 20)},
		"200 KB of script_errors":           {output: "ok", errors: hostile(200 << 10)},
		"all three":                         {output: jsonOut(1<<20) + hostile(150<<10), errors: hostile(200 << 10)},
		"valid JSON just under the cap":     {output: jsonOut(inline - 100), errors: hostile(inline - 100)},
	}
	p := New(nil, store, Options{InlineMax: inline, PreviewBytes: preview, Version: "test"}, nopLog)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			tn := Tenant{Name: "contoso"}
			spill := store.Opener(ctx, artifact.ObjectName(tn.Name, guid, 3, artifact.KindOutput), nil)
			ev := scriptEvent(t, transcriptOf(c.output, c.errors), inline, preview, spill)
			b, err := p.Encode(ctx, tn, ev, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > limit {
				t.Fatalf("encoded %d bytes, over the limit %d", len(b), limit)
			}
			if err := v.ValidateResult(b); err != nil {
				t.Fatal(err)
			}
			var got result.Event
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			s := got.Script
			// The whole output is readable: inline, or from its object.
			if s.OutputObject == nil {
				if s.Output != c.output {
					t.Fatalf("output not inline whole and not stored (%d of %d bytes)", len(s.Output), len(c.output))
				}
			} else if whole := read(t, store, s.OutputObject.Name); whole != c.output {
				t.Fatalf("stored output is %d bytes, want %d", len(whole), len(c.output))
			}
			switch {
			case s.ErrorsTruncated && s.ErrorsBytes != int64(len(c.errors)):
				t.Fatalf("errors truncated: errorsBytes %d, want %d", s.ErrorsBytes, len(c.errors))
			case s.ErrorsObject != nil && !strings.HasPrefix(c.errors, read(t, store, s.ErrorsObject.Name)[:100]):
				t.Fatal("stored errors are not the script's errors")
			case !s.ErrorsTruncated && s.Errors != c.errors:
				t.Fatalf("errors changed without errorsTruncated")
			}
			t.Logf("%d bytes: outputTruncated=%v outputJsonOmitted=%v errorsTruncated=%v fieldsTruncated=%v",
				len(b), s.OutputTruncated, s.OutputJSONOmitted, s.ErrorsTruncated, got.FieldsTruncated)
		})
	}
}

func read(t *testing.T, store *artifact.Store, name string) string {
	t.Helper()
	r, err := store.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An event whose copied fields alone are too large is cut, flagged, and still fits.
func TestEncodeCutsCopiedFields(t *testing.T) {
	ev := &result.Event{SchemaVersion: result.SchemaVersion, ActionID: guid, Tenant: "t", TenantID: "x", CommandType: "PutFile",
		CommandStatus: "Completed", Outcome: result.OutcomeNoResult, RelayedAt: time.Now(), EventTime: time.Now(), RelayVersion: "test",
		RequestorComment: hostile(4096), Params: map[string]string{}, Problem: &result.Problem{Code: "x", Message: hostile(30000)}}
	for i := range 32 {
		ev.Params[strings.Repeat("k", i+1)] = hostile(16384)
		ev.Errors = append(ev.Errors, hostile(4096))
	}
	p := New(nil, nil, Options{PreviewBytes: 4 << 10}, nopLog)
	const limit = 64 << 10
	b, err := p.Encode(context.Background(), Tenant{Name: "t"}, ev, limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > limit || !ev.FieldsTruncated {
		t.Fatalf("%d bytes (limit %d), fieldsTruncated=%v", len(b), limit, ev.FieldsTruncated)
	}
}

// FuzzEncode: whatever transcript the device writes, the encoded result fits the limit and validates. The
// caps are small so that the fuzzer reaches every step with small inputs; there is no store (fetch mode),
// so every step falls back to previews.
func FuzzEncode(f *testing.F) {
	for _, seed := range []string{
		string(transcriptOf(hostile(3000), hostile(3000))),
		string(transcriptOf(`{"a":["<>&\u0001"]}`, "")),
		`{"script_output":"\u0000\u0000","exit_code":1}`,
		`not json at all <>&` + hostile(2000),
		`{"script_output":` + strings.Repeat("[", 500),
	} {
		f.Add([]byte(seed))
	}
	v, err := schemas.New()
	if err != nil {
		f.Fatal(err)
	}
	const inline, preview, limit = 2 << 10, 256, 8 << 10
	p := New(nil, nil, Options{InlineMax: inline, PreviewBytes: preview, Version: "fuzz"}, nopLog)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev := scriptEvent(t, data, inline, preview, nil)
		if ev.Problem != nil {
			ev.Outcome, ev.Script = result.OutcomeParseError, nil
		}
		b, err := p.Encode(context.Background(), Tenant{Name: "contoso"}, ev, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > limit {
			t.Fatalf("encoded %d bytes, over the limit %d", len(b), limit)
		}
		if err := v.ValidateResult(b); err != nil {
			t.Fatal(err)
		}
	})
}
