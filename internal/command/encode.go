package command

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/transcript"
)

// Encode returns ev as JSON of at most limit bytes, so that its publish can never fail on the server's max
// payload. Everything inside a result is attacker-controlled (the device writes the output, the errors and
// the file; the event's publisher writes the rest), and JSON can grow text sixfold (a control character
// becomes \u0001), so the size is measured, never estimated. When the encoding is too large, the large
// parts move out, in this order, re-measuring after each step:
//
//  1. outputJson is left out (outputJsonOmitted): the output still holds the document;
//  2. an inline output moves to the Object Store and the event keeps a head/tail preview (outputTruncated,
//     outputObject);
//  3. the script errors likewise (errorsTruncated, errorsBytes, errorsObject);
//  4. inline GetFile content moves to the Object Store (inline false, object);
//  5. the raw bytes of an unparseable file are dropped (rawTruncated);
//  6. every remaining text (previews, params, command errors, the problem message, the copied action fields)
//     is cut to shorter and shorter previews (fieldsTruncated), down to none at all.
//
// Without a store, steps 2 to 4 keep only the preview and the digests. HTML characters are not escaped:
// '<', '>' and '&' stay one byte. Encode changes ev to what it returns.
func (p *Processor) Encode(ctx context.Context, t Tenant, ev *result.Event, limit int) ([]byte, error) {
	b, err := marshal(ev)
	if err != nil || len(b) <= limit {
		return b, err
	}
	steps := []func() error{
		func() error {
			if ev.Script != nil && ev.Script.OutputJSON != nil {
				ev.Script.OutputJSON, ev.Script.OutputJSONOmitted = nil, true
			}
			return nil
		},
		func() error { return p.moveOutput(ctx, t, ev) },
		func() error { return p.moveErrors(ctx, t, ev) },
		func() error { return p.moveFile(ctx, t, ev) },
		func() error {
			if ev.Problem != nil && ev.Problem.RawBase64 != "" {
				ev.Problem.RawBase64, ev.Problem.RawTruncated = "", true
			}
			return nil
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
		if b, err = marshal(ev); err != nil || len(b) <= limit {
			return b, err
		}
	}
	for n := p.opts.PreviewBytes; ; n /= 2 {
		cutFields(ev, n)
		if b, err = marshal(ev); err != nil || len(b) <= limit {
			return b, err
		}
		if n == 0 {
			return nil, fmt.Errorf("result of %s/%d is %d bytes with every field cut, over the limit of %d", ev.ActionID, ev.Index, len(b), limit)
		}
	}
}

// marshal encodes v without HTML escaping and without the trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// moveOutput stores an inline script output whole and keeps a preview in the event.
func (p *Processor) moveOutput(ctx context.Context, t Tenant, ev *result.Event) error {
	s := ev.Script
	if s == nil || s.OutputTruncated || len(s.Output) <= 2*p.opts.PreviewBytes {
		return nil
	}
	if p.store != nil {
		ref, err := p.put(ctx, artifact.ObjectName(t.Name, ev.ActionID, ev.Index, artifact.KindOutput), ev, "script-output", []byte(s.Output))
		if err != nil {
			return err
		}
		s.OutputObject = ref
	}
	s.Output, s.OutputTruncated = transcript.Preview(s.Output, p.opts.PreviewBytes), true
	return nil
}

// moveErrors stores large script errors whole and keeps a preview in the event.
func (p *Processor) moveErrors(ctx context.Context, t Tenant, ev *result.Event) error {
	s := ev.Script
	if s == nil || s.ErrorsTruncated || len(s.Errors) <= 2*p.opts.PreviewBytes {
		return nil
	}
	if p.store != nil {
		ref, err := p.put(ctx, artifact.ObjectName(t.Name, ev.ActionID, ev.Index, artifact.KindErrors), ev, "script-errors", []byte(s.Errors))
		if err != nil {
			return err
		}
		s.ErrorsObject = ref
	}
	s.ErrorsBytes = int64(len(s.Errors))
	s.Errors, s.ErrorsTruncated = transcript.Preview(s.Errors, p.opts.PreviewBytes), true
	return nil
}

// moveFile stores inline GetFile content and drops it from the event (the digest stays).
func (p *Processor) moveFile(ctx context.Context, t Tenant, ev *result.Event) error {
	f := ev.File
	if f == nil || f.ContentBase64 == "" {
		return nil
	}
	f.NotInlineReason = "the event would exceed the server's max payload and there is no object store"
	if p.store != nil {
		content, err := base64.StdEncoding.DecodeString(f.ContentBase64)
		if err != nil {
			return fmt.Errorf("inline file content of %s/%d: %w", ev.ActionID, ev.Index, err)
		}
		ref, err := p.put(ctx, artifact.ObjectName(t.Name, ev.ActionID, ev.Index, artifact.KindFile), ev, "getfile", content)
		if err != nil {
			return err
		}
		f.Object = ref
		f.NotInlineReason = "the event would exceed the server's max payload; stored in the object store"
	}
	f.ContentBase64, f.Inline = "", false
	return nil
}

// put stores data whole as one object.
func (p *Processor) put(ctx context.Context, name string, ev *result.Event, kind string, data []byte) (*result.ObjectRef, error) {
	meta := map[string]string{"tenant": ev.Tenant, "action-id": ev.ActionID, "index": strconv.Itoa(ev.Index), "kind": kind}
	return p.store.Put(ctx, name, meta, data)
}

// cutFields cuts every text of the event that can be long to a head/tail preview of n bytes each, and
// bounds the number of params and command errors.
func cutFields(ev *result.Event, n int) {
	const maxItems = 16
	ev.FieldsTruncated = true
	cut := func(s *string) { *s = transcript.Preview(*s, n) }
	for _, s := range []*string{&ev.CommandType, &ev.CommandStatus, &ev.ActionStatus, &ev.MachineID,
		&ev.ComputerDNSName, &ev.Requestor, &ev.RequestorComment, &ev.TenantID} {
		cut(s)
	}
	if len(ev.Errors) > maxItems {
		ev.Errors = ev.Errors[:maxItems]
	}
	for i := range ev.Errors {
		cut(&ev.Errors[i])
	}
	params := make(map[string]string, min(len(ev.Params), maxItems))
	for _, k := range slices.Sorted(maps.Keys(ev.Params)) { // sorted: a redelivery cuts the same way
		if len(params) == maxItems {
			break
		}
		params[transcript.Preview(k, n)] = transcript.Preview(ev.Params[k], n)
	}
	if ev.Params != nil {
		ev.Params = params
	}
	if s := ev.Script; s != nil {
		if s.ErrorsBytes == 0 {
			s.ErrorsBytes = int64(len(s.Errors))
		}
		for _, f := range []*string{&s.Output, &s.Errors, &s.ScriptName, &s.TranscriptPath} {
			cut(f)
		}
		s.ErrorsTruncated = s.ErrorsTruncated || int64(len(s.Errors)) < s.ErrorsBytes
		if !s.ErrorsTruncated {
			s.ErrorsBytes = 0
		}
		s.OutputJSON, s.OutputJSONOmitted = nil, s.OutputJSONOmitted || s.OutputJSON != nil
		s.OutputTruncated = s.OutputTruncated || int64(len(s.Output)) < s.OutputBytes
	}
	if f := ev.File; f != nil {
		cut(&f.Name)
		cut(&f.NotInlineReason)
	}
	if pr := ev.Problem; pr != nil {
		cut(&pr.Message)
		pr.RawBase64, pr.RawTruncated = "", pr.RawTruncated || pr.RawBase64 != ""
	}
}
