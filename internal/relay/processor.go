package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/download"
	"github.com/lr-relay/lr-relay/internal/getfile"
	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/transcript"
)

// API is what the relay needs from a tenant's Defender API client.
type API interface {
	GetAction(ctx context.Context, id string) (*action.MachineAction, error)
	GetResultLink(ctx context.Context, id string, index int) (string, error)
}

// Downloader opens a result link.
type Downloader interface {
	Open(ctx context.Context, link string) (*download.Body, error)
}

// Store keeps content too large to go inline. It is optional.
type Store interface {
	Opener(ctx context.Context, name string, meta map[string]string) artifact.Opener
	// Lookup finds a complete object (all chunks present, digest recorded) stored by an earlier delivery.
	Lookup(ctx context.Context, name string) (*result.ObjectRef, map[string]string, bool, error)
	// Annotate adds metadata to a stored object.
	Annotate(ctx context.Context, name string, extra map[string]string) error
}

// metaScript is the object metadata key holding a script result (without its object reference), so that a
// redelivery can reuse a stored output without downloading it again.
const metaScript = "lr-script-result"

// ProcessOptions are the parsing limits.
type ProcessOptions struct {
	InlineMax       int
	PreviewBytes    int
	RawMax          int
	GetFileMaxBytes int64
	GetFileMaxRatio float64
	// LinkRetries is how many fresh links are requested after an expired one.
	LinkRetries int
}

// Processor turns one command of a machine action into its result event. It does not know about NATS, so
// `lr-relay fetch` uses it as it is.
type Processor struct {
	dl    Downloader
	store Store
	opts  ProcessOptions
	now   func() time.Time
	log   zerolog.Logger
}

// NewProcessor returns a Processor. store may be nil: large content is then summarised, not kept.
func NewProcessor(dl Downloader, store Store, opts ProcessOptions, log zerolog.Logger) *Processor {
	if opts.RawMax == 0 {
		opts.RawMax = 16 << 10
	}
	return &Processor{dl: dl, store: store, opts: opts, now: time.Now, log: log}
}

// Result builds the result event of command c. A returned error means no result could be built: it is either
// transient (retry the event later) or permanent (see classify); problems that a result can describe (a file
// that does not parse, a refused link, a decompression bomb) are returned as results, not errors.
func (p *Processor) Result(ctx context.Context, api API, tenant string, a *action.MachineAction, c action.Command) (*result.Event, error) {
	ev := baseEvent(tenant, a, c)
	if !c.NeedsResult() {
		ev.Outcome = result.OutcomeNoResult
		ev.RelayedAt = p.now().UTC()
		return ev, nil
	}
	if c.Command.Type == action.TypeGetFile || c.Command.Type == action.TypeRunScript {
		reused, err := p.reuse(ctx, a, c, ev)
		if err != nil {
			return nil, err
		}
		if reused {
			ev.RelayedAt = p.now().UTC()
			return ev, nil
		}
	}
	for attempt := 0; ; attempt++ {
		err := p.fetchInto(ctx, api, a, c, ev)
		var de *download.Error
		if errors.As(err, &de) && de.Kind == download.KindExpired && attempt < p.opts.LinkRetries {
			p.log.Info().Str("action_id", a.ID).Int("index", c.Index).Int("attempt", attempt+1).
				Msg("result link expired; requesting a fresh one")
			continue
		}
		if err != nil {
			if ok := problemResult(ev, err); ok {
				ev.RelayedAt = p.now().UTC()
				return ev, nil
			}
			return nil, err
		}
		ev.RelayedAt = p.now().UTC()
		return ev, nil
	}
}

func (p *Processor) fetchInto(ctx context.Context, api API, a *action.MachineAction, c action.Command, ev *result.Event) error {
	link, err := api.GetResultLink(ctx, a.ID, c.Index)
	if err != nil {
		return err
	}
	body, err := p.dl.Open(ctx, link)
	if err != nil {
		return err
	}
	defer body.Close()
	switch c.Command.Type {
	case action.TypeRunScript:
		opts := transcript.Options{InlineMax: p.opts.InlineMax, PreviewBytes: p.opts.PreviewBytes, RawMax: p.opts.RawMax}
		if p.store != nil {
			opts.Spill = p.store.Opener(ctx, artifact.ObjectName(a.ID, c.Index, artifact.KindOutput), map[string]string{
				"action-id": a.ID, "index": fmt.Sprint(c.Index), "kind": "script-output"})
		}
		script, problem, err := transcript.Parse(body, opts)
		if err != nil {
			return err
		}
		if script != nil && script.OutputObject != nil {
			p.rememberScript(ctx, script)
		}
		ev.Script, ev.Problem = script, problem
		ev.Outcome = result.OutcomeRelayed
		if problem != nil {
			ev.Outcome = result.OutcomeParseError
		}
	case action.TypeGetFile:
		opts := getfile.Options{InlineMax: int64(p.opts.InlineMax), MaxBytes: p.opts.GetFileMaxBytes, MaxRatio: p.opts.GetFileMaxRatio}
		if p.store != nil {
			opts.Spill = p.store.Opener(ctx, artifact.ObjectName(a.ID, c.Index, artifact.KindFile), map[string]string{
				"action-id": a.ID, "index": fmt.Sprint(c.Index), "kind": "getfile", "file-name": body.Name})
		}
		file, problem, err := getfile.Process(ctx, body, body.Name, opts)
		if err != nil {
			return err
		}
		ev.File, ev.Problem = file, problem
		ev.Outcome = getfile.OutcomeFor(problem)
	}
	return nil
}

// problemResult turns a permanent, command-level failure into a result with a Problem, so the command still
// ends as exactly one result event. It reports false for errors the caller must handle (transient ones, and
// the action-level ones such as a 404 for the whole action).
func problemResult(ev *result.Event, err error) bool {
	var de *download.Error
	if errors.As(err, &de) {
		switch {
		case de.Kind == download.KindTooLarge:
			ev.Outcome = result.OutcomeTooLarge
			ev.Problem = &result.Problem{Code: "too_large", Message: de.Error()}
			return true
		case de.Kind == download.KindDisallowed:
			ev.Outcome = result.OutcomeError
			ev.Problem = &result.Problem{Code: "download_refused", Message: de.Error()}
			return true
		case de.Kind == download.KindExpired:
			ev.Outcome = result.OutcomeError
			ev.Problem = &result.Problem{Code: "link_expired", Message: "the result link kept expiring: " + de.Error()}
			return true
		case !de.Retryable():
			ev.Outcome = result.OutcomeError
			ev.Problem = &result.Problem{Code: "download_failed", Message: de.Error()}
			return true
		}
		return false
	}
	var ae *mde.APIError
	if errors.As(err, &ae) && !ae.Retryable() && (ae.Status == 400 || ae.Status == 404) {
		// The action exists (we have it), but the API has no result for this index.
		ev.Outcome = result.OutcomeError
		ev.Problem = &result.Problem{Code: "no_result_link", Message: ae.Error()}
		return true
	}
	return false
}

func baseEvent(tenant string, a *action.MachineAction, c action.Command) *result.Event {
	ev := &result.Event{
		SchemaVersion:   result.SchemaVersion,
		ActionID:        a.ID,
		TenantID:        a.TenantID,
		Index:           c.Index,
		CommandType:     c.Command.Type,
		CommandStatus:   c.CommandStatus,
		Errors:          c.Errors,
		ActionStatus:    a.Status,
		MachineID:       a.MachineID,
		ComputerDNSName: a.ComputerDNSName,
		Requestor:       a.Requestor,
	}
	if ev.CommandType == "" {
		ev.CommandType = "Unknown"
	}
	if ev.CommandStatus == "" {
		ev.CommandStatus = "Unknown"
	}
	if len(c.Command.Params) > 0 {
		ev.Params = make(map[string]string, len(c.Command.Params))
		for _, prm := range c.Command.Params {
			ev.Params[prm.Key] = prm.Value
		}
	}
	return ev
}

// reuse builds a result from an object that an earlier delivery stored completely (it crashed or was stopped
// before publishing the result): no API call, no download, no second object. A GetFile object carries its
// name and compressed size; a script output object carries the whole script result (with its preview) once
// rememberScript has annotated it. Anything less is not reused: the content is fetched again and replaces
// the object under the same name.
func (p *Processor) reuse(ctx context.Context, a *action.MachineAction, c action.Command, ev *result.Event) (bool, error) {
	if p.store == nil {
		return false, nil
	}
	kind := artifact.KindFile
	if c.Command.Type == action.TypeRunScript {
		kind = artifact.KindOutput
	}
	ref, meta, ok, err := p.store.Lookup(ctx, artifact.ObjectName(a.ID, c.Index, kind))
	if err != nil || !ok {
		return false, err
	}
	switch kind {
	case artifact.KindFile:
		compressed, _ := strconv.ParseInt(meta[artifact.MetaCompressedBytes], 10, 64)
		ev.File = &result.File{
			Name: meta[artifact.MetaOriginalName], CompressedBytes: compressed, Bytes: ref.Size, SHA256: ref.SHA256,
			NotInlineReason: "content larger than the inline cap; stored in the object store", Object: ref,
		}
	case artifact.KindOutput:
		var s result.Script
		if raw := meta[metaScript]; raw == "" || json.Unmarshal([]byte(raw), &s) != nil || s.OutputBytes != ref.Size {
			return false, nil
		}
		s.OutputObject = ref
		ev.Script = &s
	}
	ev.Outcome = result.OutcomeRelayed
	p.log.Info().Str("action_id", a.ID).Int("index", c.Index).Str("object", ref.Name).
		Msg("reusing the complete object stored by an earlier delivery")
	return true, nil
}

// rememberScript stores the parsed script result with its output object. If that fails the result is still
// published; a redelivery would just download the output again.
func (p *Processor) rememberScript(ctx context.Context, script *result.Script) {
	s := *script
	s.OutputObject = nil
	b, err := json.Marshal(s)
	if err == nil {
		err = p.store.Annotate(ctx, script.OutputObject.Name, map[string]string{metaScript: string(b)})
	}
	if err != nil {
		p.log.Warn().Err(err).Str("object", script.OutputObject.Name).Msg("could not record the script result with its object")
	}
}
