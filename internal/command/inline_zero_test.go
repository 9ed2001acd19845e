package command

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/schemas"
)

// TestEncodeInlineZero: with LR_INLINE_MAX_BYTES=0 (and so LR_PREVIEW_BYTES=0) Encode still makes every
// result fit and validate. Script content never reaches the event; copied fields that alone exceed the limit
// are cut at once to nothing (there is no preview size to start from), and flagged.
func TestEncodeInlineZero(t *testing.T) {
	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	const limit = 8 << 10
	p := New(nil, nil, Options{InlineMax: 0, PreviewBytes: 0, Version: "test"}, nopLog)
	hostileFields := func(ev *result.Event) {
		ev.RequestorComment = hostile(4096)
		ev.Params = map[string]string{}
		for i := range 32 {
			ev.Params[strings.Repeat("k", i+1)] = hostile(16384)
			ev.Errors = append(ev.Errors, hostile(4096))
		}
	}
	tests := []struct {
		name       string
		transcript []byte
		fields     bool
		wantCut    bool
	}{
		{name: "small output", transcript: transcriptOf("hello", "oops")},
		{name: "escape-heavy output and errors", transcript: transcriptOf(hostile(200<<10), hostile(200<<10))},
		{name: "JSON output", transcript: transcriptOf(`{"a":[1,2,3]}`, "")},
		{name: "unparseable file", transcript: []byte("not json <>&" + hostile(100))},
		{name: "copied fields over the limit", transcript: transcriptOf("hello", ""), fields: true, wantCut: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := scriptEvent(t, tt.transcript, 0, 0, nil)
			if ev.Problem != nil {
				ev.Outcome, ev.Script = result.OutcomeParseError, nil
			}
			if tt.fields {
				hostileFields(ev)
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
			var got result.Event
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if s := got.Script; s != nil && (s.Output != "" || s.OutputJSON != nil || s.Errors != "") {
				t.Errorf("output %q, outputJson %v, errors %q; want no content", s.Output, s.OutputJSON, s.Errors)
			}
			if got.FieldsTruncated != tt.wantCut {
				t.Errorf("fieldsTruncated %v, want %v", got.FieldsTruncated, tt.wantCut)
			}
		})
	}
}
