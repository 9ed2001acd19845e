// Package command does the work on one command of a machine action: it asks the Defender API for the result
// link, downloads and parses the result (the RunScript transcript or the GetFile gzip), stores large content in
// the Object Store, reuses what an earlier delivery stored completely, and builds the result event that fits
// the server's max payload.
//
// It knows nothing of NATS messages or their fates. Every failure comes back as a typed error that says what
// it means (see errors.go): the relay decides the message's fate from it, and `lr-relay fetch` just reports it.
package command

import (
	"context"
	"encoding/json"
	"errors"
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

// API is what the work needs from a tenant's Defender API client.
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
	Bucket() string
	Opener(ctx context.Context, name string, meta map[string]string) artifact.Opener
	// Lookup finds a complete object (all chunks present, digest recorded) stored by an earlier delivery.
	Lookup(ctx context.Context, name string) (*result.ObjectRef, map[string]string, bool, error)
	// Annotate adds metadata to a stored object.
	Annotate(ctx context.Context, name string, extra map[string]string) error
	// Put stores data whole as one object.
	Put(ctx context.Context, name string, meta map[string]string, data []byte) (*result.ObjectRef, error)
}

// Tenant is whose command it is. Everything the result holds is fetched with this tenant's own credentials,
// and everything stored is stored under its name.
type Tenant struct {
	// Name is lr-relay's name for the tenant ("default" for the LR_MDE_* tenant).
	Name string
	// ID is the tenant's configured Entra tenant id, used when the event carries none.
	ID  string
	API API
}

// metaScript is the object metadata key holding a script result (without its object reference), so that a
// redelivery can reuse a stored output without downloading it again.
const metaScript = "lr-script-result"

// Options are the caps of the work. Every field comes from the configuration (internal/config); none has a
// default here.
type Options struct {
	InlineMax       int
	PreviewBytes    int
	RawMax          int
	GetFileMaxBytes int64
	GetFileMaxRatio float64
	// LinkRetries is how many fresh links are requested after an expired one.
	LinkRetries int
	// Version is lr-relay's version, written into every result.
	Version string
}

// Processor turns one command of a machine action into its result event.
type Processor struct {
	dl    Downloader
	store Store
	opts  Options
	now   func() time.Time
	log   zerolog.Logger
}

// New returns a Processor. store may be nil: large content is then summarised, not kept.
func New(dl Downloader, store Store, opts Options, log zerolog.Logger) *Processor {
	return &Processor{dl: dl, store: store, opts: opts, now: time.Now, log: log}
}

// Complete fills in the commands of an event that carried none, from GET machineactions/{id}. Its errors are
// those of Result.
func (p *Processor) Complete(ctx context.Context, t Tenant, a *action.MachineAction) error {
	fetched, err := t.API.GetAction(ctx, a.ID)
	if err != nil {
		return apiFailure(err)
	}
	a.Commands, a.HasCommands = fetched.Commands, true
	fillMissing(a, fetched)
	return nil
}

// Result builds the result event of command c. The returned event is never nil: with an error it is the
// event as far as it got (identity, times, the command's fields), so that a caller that decides to publish a
// result describing the failure (a *ProblemError) has everything else ready. The errors are typed (see
// errors.go); a nil error means the event is complete.
func (p *Processor) Result(ctx context.Context, t Tenant, a *action.MachineAction, c action.Command) (*result.Event, error) {
	ev := p.baseEvent(t, a, c)
	if !c.NeedsResult() {
		ev.Outcome = result.OutcomeNoResult
		return p.stamp(ev), nil
	}
	reused, err := p.reuse(ctx, t, a, c, ev)
	if err != nil {
		return ev, err
	}
	if reused {
		return p.stamp(ev), nil
	}
	for attempt := 0; ; attempt++ {
		err := p.fetchInto(ctx, t, a, c, ev)
		var de *download.Error
		if errors.As(err, &de) && de.Kind == download.KindExpired && attempt < p.opts.LinkRetries {
			p.log.Info().Str("action_id", a.ID).Int("index", c.Index).Int("attempt", attempt+1).
				Msg("result link expired; requesting a fresh one")
			continue
		}
		if err != nil {
			return ev, err
		}
		return p.stamp(ev), nil
	}
}

// Describe completes ev as a result that describes a command-level problem instead of content.
func (p *Processor) Describe(ev *result.Event, pe *ProblemError) *result.Event {
	ev.Outcome = pe.Outcome
	ev.Problem = &result.Problem{Code: pe.Code, Message: pe.Error()}
	ev.Script, ev.File = nil, nil
	return p.stamp(ev)
}

// stamp sets the relay time and the event time: the command's end, else the action's last update, else now.
func (p *Processor) stamp(ev *result.Event) *result.Event {
	ev.RelayedAt = p.now().UTC()
	switch {
	case ev.CommandEndedAt != nil:
		ev.EventTime = *ev.CommandEndedAt
	case ev.ActionUpdatedAt != nil:
		ev.EventTime = *ev.ActionUpdatedAt
	default:
		ev.EventTime = ev.RelayedAt
	}
	return ev
}

func (p *Processor) fetchInto(ctx context.Context, t Tenant, a *action.MachineAction, c action.Command, ev *result.Event) error {
	link, err := t.API.GetResultLink(ctx, a.ID, c.Index)
	if err != nil {
		return p.linkFailure(ctx, t, a, err)
	}
	body, err := p.dl.Open(ctx, link)
	if err != nil {
		return downloadFailure(err)
	}
	defer body.Close()
	meta := map[string]string{"tenant": t.Name, "action-id": a.ID, "index": strconv.Itoa(c.Index)}
	switch c.Command.Type {
	case action.TypeRunScript:
		opts := transcript.Options{InlineMax: p.opts.InlineMax, PreviewBytes: p.opts.PreviewBytes, RawMax: p.opts.RawMax}
		if p.store != nil {
			meta["kind"] = "script-output"
			opts.Spill = p.store.Opener(ctx, artifact.ObjectName(t.Name, a.ID, c.Index, artifact.KindOutput), meta)
		}
		script, problem, err := transcript.Parse(body, opts)
		if err != nil {
			return downloadFailure(err)
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
			meta["kind"], meta["file-name"] = "getfile", body.Name
			opts.Spill = p.store.Opener(ctx, artifact.ObjectName(t.Name, a.ID, c.Index, artifact.KindFile), meta)
		}
		file, problem, err := getfile.Process(ctx, body, body.Name, opts)
		if err != nil {
			return downloadFailure(err)
		}
		ev.File, ev.Problem = file, problem
		ev.Outcome = getfile.OutcomeFor(problem)
	}
	return nil
}

// linkFailure types a failed result-link call. A 404 may mean that the action does not exist (or is not this
// tenant's), or only that this command has no result: the action itself is asked for (on the action budget)
// to tell the two apart.
func (p *Processor) linkFailure(ctx context.Context, t Tenant, a *action.MachineAction, err error) error {
	var ae *mde.APIError
	if !errors.As(err, &ae) || ae.Retryable() {
		return apiFailure(err)
	}
	switch ae.Status {
	case 400:
		return &ProblemError{Outcome: result.OutcomeError, Code: "no_result_link", Err: err}
	case 404:
		if _, gerr := t.API.GetAction(ctx, a.ID); gerr != nil {
			return apiFailure(gerr)
		}
		return &ProblemError{Outcome: result.OutcomeError, Code: "no_result_link", Err: err}
	}
	return apiFailure(err)
}

func (p *Processor) baseEvent(t Tenant, a *action.MachineAction, c action.Command) *result.Event {
	ev := &result.Event{
		SchemaVersion:    result.SchemaVersion,
		ActionID:         a.ID,
		Tenant:           t.Name,
		TenantID:         a.TenantID,
		Index:            c.Index,
		CommandType:      c.Command.Type,
		CommandStatus:    c.CommandStatus,
		Errors:           c.Errors,
		ActionStatus:     a.Status,
		MachineID:        a.MachineID,
		ComputerDNSName:  a.ComputerDNSName,
		Requestor:        a.Requestor,
		RequestorComment: a.RequestorComment,
		ActionCreatedAt:  parseTime(a.CreationDateTimeUTC),
		ActionUpdatedAt:  parseTime(a.LastUpdateDateTimeUTC),
		CommandStartedAt: parseTime(c.StartTime),
		CommandEndedAt:   parseTime(c.EndTime),
		RelayVersion:     p.opts.Version,
	}
	if ev.TenantID == "" {
		ev.TenantID = t.ID
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

// parseTime reads the API's timestamps ("2024-05-01T10:00:00.1234567Z"; other RFC 3339 forms too) and
// returns them in UTC, or nil when the field is absent or not a time.
func parseTime(s string) *time.Time {
	if s == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		// Some API versions leave the zone out; the API's times are UTC.
		t, err = time.Parse("2006-01-02T15:04:05.999999999", s)
		if err != nil {
			return nil
		}
	}
	t = t.UTC()
	return &t
}

func fillMissing(a, from *action.MachineAction) {
	for _, f := range []struct {
		dst *string
		src string
	}{
		{&a.Status, from.Status}, {&a.MachineID, from.MachineID}, {&a.ComputerDNSName, from.ComputerDNSName},
		{&a.Requestor, from.Requestor}, {&a.RequestorComment, from.RequestorComment}, {&a.Type, from.Type},
		{&a.CreationDateTimeUTC, from.CreationDateTimeUTC}, {&a.LastUpdateDateTimeUTC, from.LastUpdateDateTimeUTC},
	} {
		if *f.dst == "" {
			*f.dst = f.src
		}
	}
}

// reuse builds a result from an object that an earlier delivery stored completely (it crashed or was stopped
// before publishing the result): no API call, no download, no second object. Only the tenant's own objects
// are looked at (ObjectName starts with the tenant), so a result is only ever built from what this tenant's
// credentials fetched. A GetFile object carries its name and compressed size; a script output object carries
// the whole script result (with its preview) once rememberScript has annotated it. Anything less is not
// reused: the content is fetched again and replaces the object under the same name.
func (p *Processor) reuse(ctx context.Context, t Tenant, a *action.MachineAction, c action.Command, ev *result.Event) (bool, error) {
	if p.store == nil {
		return false, nil
	}
	kind := artifact.KindFile
	if c.Command.Type == action.TypeRunScript {
		kind = artifact.KindOutput
	}
	ref, meta, ok, err := p.store.Lookup(ctx, artifact.ObjectName(t.Name, a.ID, c.Index, kind))
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
