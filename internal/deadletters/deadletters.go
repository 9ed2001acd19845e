// Package deadletters is the operator's tooling for the dead-letter stream: list the records, show one with
// its original payload, and replay records whose cause has been fixed by republishing their payloads to the
// source subject. It works on any dead-letter stream that holds schemas/deadletter.schema.json records.
package deadletters

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
)

// HeaderReplayOf names the dead-letter record a replayed event came from: <deadletter stream>/<seq>.
const HeaderReplayOf = "Lr-Replay-Of"

// Record is a dead-letter record as stored (schemas/deadletter.schema.json): the relay's own type, so that
// the tools read exactly what the relay writes. Version 1 records read into it too (the fields version 2
// added stay empty). When PayloadTruncated is set, PayloadBase64 holds only a prefix and PayloadObject names
// the whole payload in the Object Store.
type Record = relay.DeadLetter

// Entry is one stored record: its sequence in the dead-letter stream, the decoded record and the raw bytes.
type Entry struct {
	Seq    uint64
	Record Record
	Raw    []byte
	// Err is set when the stored message is not a record (it is still listed, so nothing hides).
	Err error
}

// Filter selects records. Zero values select everything.
type Filter struct {
	Reason string
	Since  time.Time
}

func (f Filter) match(e Entry) bool {
	if f.Reason != "" && e.Record.Reason != f.Reason {
		return false
	}
	if !f.Since.IsZero() && e.Record.DeadLetteredAt.Before(f.Since) {
		return false
	}
	return true
}

// Options names what the tools work on.
type Options struct {
	// Stream is the dead-letter stream (LR_DEADLETTER_STREAM).
	Stream string
	// SourceStream and SourceSubject are where replayed payloads go (LR_SOURCE_STREAM, LR_SOURCE_SUBJECT).
	SourceStream, SourceSubject string
	// ObjectBucket is the Object Store bucket used when a record's payloadObject names none (LR_OBJECT_BUCKET).
	ObjectBucket string
}

// OptionsFrom takes the names from the relay's configuration, so the tools see what `lr-relay run` uses.
func OptionsFrom(cfg config.Config) Options {
	return Options{Stream: cfg.DeadLetterStream, SourceStream: cfg.SourceStream, SourceSubject: cfg.SourceSubject,
		ObjectBucket: cfg.ObjectBucket}
}

// Connect dials NATS as `lr-relay run` does (LR_NATS_URL, LR_NATS_CREDS_FILE), but fails at once when the
// server cannot be reached: a command-line tool should say so rather than wait.
func Connect(cfg config.Config) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name("lr-relay deadletters"), nats.Timeout(5 * time.Second)}
	if cfg.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NATS at LR_NATS_URL: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// Tool reads and replays one dead-letter stream.
type Tool struct {
	js jetstream.JetStream
	o  Options
}

// New returns a Tool; it does not touch the network.
func New(js jetstream.JetStream, o Options) *Tool { return &Tool{js: js, o: o} }

func (t *Tool) stream(ctx context.Context) (jetstream.Stream, error) {
	s, err := t.js.Stream(ctx, t.o.Stream)
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %q (LR_DEADLETTER_STREAM): %w", t.o.Stream, err)
	}
	return s, nil
}

// List returns the records that match f, in stream order.
func (t *Tool) List(ctx context.Context, f Filter) ([]Entry, error) {
	s, err := t.stream(ctx)
	if err != nil {
		return nil, err
	}
	var out []Entry
	err = each(ctx, s, func(e Entry) error {
		if e.Err != nil || f.match(e) {
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// each calls fn for every stored message, asking the server for the next one after each, so deleted
// sequences cost nothing.
func each(ctx context.Context, s jetstream.Stream, fn func(Entry) error) error {
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the dead-letter stream at sequence %d: %w", seq, err)
		}
		if err := fn(decode(m)); err != nil {
			return err
		}
		seq = m.Sequence + 1
	}
}

func decode(m *jetstream.RawStreamMsg) Entry {
	e := Entry{Seq: m.Sequence, Raw: m.Data}
	if err := json.Unmarshal(m.Data, &e.Record); err != nil {
		e.Err = fmt.Errorf("message %d is not a dead-letter record: %w", m.Sequence, err)
	}
	return e
}

// Get returns the record stored at seq.
func (t *Tool) Get(ctx context.Context, seq uint64) (Entry, error) {
	s, err := t.stream(ctx)
	if err != nil {
		return Entry{}, err
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("no record at sequence %d of %s", seq, t.o.Stream)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("reading record %d: %w", seq, err)
	}
	e := decode(m)
	return e, e.Err
}

// PayloadError means a record's payload cannot be recovered whole: its object is missing or its digest does
// not match. Replaying the record is refused; retrying will not help.
type PayloadError struct {
	Seq uint64
	Err error
}

func (e *PayloadError) Error() string { return fmt.Sprintf("record %d: payload: %v", e.Seq, e.Err) }
func (e *PayloadError) Unwrap() error { return e.Err }

// Retryable is false: the stored payload will not change.
func (e *PayloadError) Retryable() bool { return false }

// Payload returns the whole original payload of a record: inline, or read from the Object Store when the
// record holds only a prefix. Its SHA-256 is checked whenever the record carries one.
func (t *Tool) Payload(ctx context.Context, e Entry) ([]byte, error) {
	r := e.Record
	fail := func(format string, args ...any) error {
		return &PayloadError{Seq: e.Seq, Err: fmt.Errorf(format, args...)}
	}
	var payload []byte
	if r.PayloadObject != nil || r.PayloadTruncated {
		if r.PayloadObject == nil {
			return nil, fail("the record holds only a prefix and names no payloadObject")
		}
		b, err := t.readObject(ctx, *r.PayloadObject)
		if err != nil {
			return nil, fail("%w", err)
		}
		payload = b
		if r.PayloadObject.SHA256 != "" && !strings.EqualFold(r.PayloadObject.SHA256, hexSHA(payload)) {
			return nil, fail("object %s/%s has SHA-256 %s, the record says %s", bucketOr(r.PayloadObject.Bucket, t.o.ObjectBucket),
				r.PayloadObject.Name, hexSHA(payload), r.PayloadObject.SHA256)
		}
		if r.PayloadSHA256 == "" && r.PayloadObject.SHA256 == "" {
			return nil, fail("the record carries no SHA-256 to check the stored payload against")
		}
	} else {
		b, err := base64.StdEncoding.DecodeString(r.PayloadBase64)
		if err != nil {
			return nil, fail("payloadBase64 is not base64: %w", err)
		}
		payload = b
	}
	if r.PayloadSHA256 != "" && !strings.EqualFold(r.PayloadSHA256, hexSHA(payload)) {
		return nil, fail("SHA-256 is %s, the record says %s", hexSHA(payload), r.PayloadSHA256)
	}
	if r.PayloadBytes > 0 && len(payload) != r.PayloadBytes {
		return nil, fail("%d bytes, the record says %d", len(payload), r.PayloadBytes)
	}
	return payload, nil
}

// maxObjectPayload bounds what is read from an object: a payload was once one NATS message.
const maxObjectPayload = 64 << 20

func (t *Tool) readObject(ctx context.Context, ref result.ObjectRef) ([]byte, error) {
	bucket := bucketOr(ref.Bucket, t.o.ObjectBucket)
	obs, err := t.js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %q: %w", bucket, err)
	}
	res, err := obs.Get(ctx, ref.Name)
	if err != nil {
		return nil, fmt.Errorf("object %s/%s: %w", bucket, ref.Name, err)
	}
	defer res.Close()
	b, err := io.ReadAll(io.LimitReader(res, maxObjectPayload+1))
	if err != nil {
		return nil, fmt.Errorf("reading object %s/%s: %w", bucket, ref.Name, err)
	}
	if len(b) > maxObjectPayload {
		return nil, fmt.Errorf("object %s/%s is larger than %d bytes", bucket, ref.Name, maxObjectPayload)
	}
	return b, nil
}

func bucketOr(b, def string) string {
	if b != "" {
		return b
	}
	return def
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ParseSince reads --since: an RFC 3339 time, or a duration back from now (2h, 30m).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--since: want an RFC 3339 time (2026-01-02T15:04:05Z) or a positive duration (2h), got %q", s)
	}
	return now.Add(-d), nil
}
