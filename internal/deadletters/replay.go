package deadletters

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// ReplayOptions select and pace a replay.
type ReplayOptions struct {
	Filter Filter
	// DryRun only prints what would be replayed: nothing is published or deleted.
	DryRun bool
	// Rate is the most records republished per second (each becomes one event for the relay, and each of
	// its commands one API call). It must be positive.
	Rate float64
	// Out receives one line per record.
	Out io.Writer
	// keepRecords skips the deletion (tests use it to stand for a replay that stopped after the PubAck).
	keepRecords bool
}

// ReplayReport counts what a replay did.
type ReplayReport struct {
	// Selected records matched the filter; Replayed were republished and deleted (or would be, in a dry
	// run); Duplicates were already republished by an earlier run (the source stream deduplicated them);
	// Skipped are records whose payload could not be recovered or that are not records at all.
	Selected, Replayed, Duplicates, Skipped int
}

// Replay republishes the original payload of every selected record to the source subject, with the header
// Lr-Replay-Of and a Nats-Msg-Id derived from the record, and deletes the record once the source stream has
// acknowledged the payload. A run stopped between the two steps leaves the record; running it again
// publishes the same Nats-Msg-Id, which the source stream drops as a duplicate within its duplicate window,
// and then deletes the record. Records are paced by o.Rate, so a big replay cannot flood the Defender API
// budget. A record whose payload is missing or fails its digest is skipped and left in place.
func (t *Tool) Replay(ctx context.Context, o ReplayOptions) (ReplayReport, error) {
	var rep ReplayReport
	if o.Rate <= 0 {
		return rep, fmt.Errorf("--rate must be positive, got %g", o.Rate)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	s, err := t.stream(ctx)
	if err != nil {
		return rep, err
	}
	// Select first, then replay: a record that fails again while the replay runs is not replayed twice.
	var selected []Entry
	if err := each(ctx, s, func(e Entry) error {
		if e.Err != nil {
			if o.Filter == (Filter{}) {
				rep.Selected++
				rep.Skipped++
				fmt.Fprintf(o.Out, "skip   %d: %v\n", e.Seq, e.Err)
			}
			return nil
		}
		if o.Filter.match(e) {
			selected = append(selected, e)
		}
		return nil
	}); err != nil {
		return rep, err
	}
	rep.Selected += len(selected)
	limiter := rate.NewLimiter(rate.Limit(o.Rate), 1)
	var skipped []error
	for _, e := range selected {
		subject, err := t.replaySubject(e.Record)
		if err != nil {
			rep.Skipped++
			skipped = append(skipped, fmt.Errorf("record %d: %w", e.Seq, err))
			fmt.Fprintf(o.Out, "skip   %d: %v\n", e.Seq, err)
			continue
		}
		payload, err := t.Payload(ctx, e)
		if err != nil {
			rep.Skipped++
			skipped = append(skipped, err)
			fmt.Fprintf(o.Out, "skip   %d: %v\n", e.Seq, err)
			continue
		}
		if o.DryRun {
			rep.Replayed++
			fmt.Fprintf(o.Out, "would replay %d (%s, %s) to %s: %d bytes\n", e.Seq, e.Record.Reason, where(e.Record), subject, len(payload))
			continue
		}
		if err := limiter.Wait(ctx); err != nil {
			return rep, err
		}
		msg := &nats.Msg{Subject: subject, Data: payload, Header: nats.Header{}}
		msg.Header.Set(HeaderReplayOf, fmt.Sprintf("%s/%d", t.o.Stream, e.Seq))
		popts := []jetstream.PublishOpt{jetstream.WithMsgID(ReplayMsgID(t.o.Stream, e.Seq, payload))}
		if t.o.SourceStream != "" {
			popts = append(popts, jetstream.WithExpectStream(t.o.SourceStream))
		}
		ack, err := t.js.PublishMsg(ctx, msg, popts...)
		if err != nil {
			// No PubAck: the record stays, and the run stops (the next ones would fail the same way).
			return rep, fmt.Errorf("republishing record %d to %s: %w (the record is kept)", e.Seq, subject, err)
		}
		if ack.Duplicate {
			rep.Duplicates++
		}
		if !o.keepRecords {
			if err := s.DeleteMsg(ctx, e.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return rep, fmt.Errorf("record %d was republished (%s #%d) but could not be deleted: %w; running replay again is safe",
					e.Seq, ack.Stream, ack.Sequence, err)
			}
		}
		rep.Replayed++
		dup := ""
		if ack.Duplicate {
			dup = " (already republished by an earlier run)"
		}
		fmt.Fprintf(o.Out, "replayed %d (%s, %s) as %s #%d%s\n", e.Seq, e.Record.Reason, where(e.Record), ack.Stream, ack.Sequence, dup)
	}
	if len(skipped) > 0 {
		return rep, fmt.Errorf("%d record(s) skipped and kept: %w", len(skipped), errors.Join(skipped...))
	}
	return rep, nil
}

// ReplayMsgID is the Nats-Msg-Id of a replayed payload: the same for the same record, so a replay that runs
// twice enqueues the event once.
func ReplayMsgID(stream string, seq uint64, payload []byte) string {
	return fmt.Sprintf("lr-replay.%s.%d.%.16s", stream, seq, hexSHA(payload))
}

// replaySubject is the record's own subject when the source subject filter covers it (a wildcard source
// subject), else the source subject itself.
func (t *Tool) replaySubject(r Record) (string, error) {
	if r.Subject != "" && subjectMatches(t.o.SourceSubject, r.Subject) {
		return r.Subject, nil
	}
	if strings.ContainsAny(t.o.SourceSubject, "*>") {
		return "", fmt.Errorf("record subject %q is not covered by LR_SOURCE_SUBJECT %q", r.Subject, t.o.SourceSubject)
	}
	return t.o.SourceSubject, nil
}

// subjectMatches reports whether the literal subject matches filter (with * and > wildcards).
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}
