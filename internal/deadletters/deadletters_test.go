package deadletters

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/result"
)

const (
	dlStream   = "DL"
	dlSubject  = "test.deadletter"
	srcStream  = "SRC"
	srcSubject = "test.finished"
	bucket     = "lr-results"
)

type world struct {
	js   jetstream.JetStream
	tool *Tool
	now  time.Time
}

func newWorld(t *testing.T) *world {
	t.Helper()
	js := embeddedtest.JetStream(t)
	ctx := context.Background()
	for _, sc := range []jetstream.StreamConfig{
		{Name: dlStream, Subjects: []string{dlSubject}, Duplicates: time.Hour},
		{Name: srcStream, Subjects: []string{srcSubject}, Duplicates: 2 * time.Minute},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	return &world{js: js, now: time.Now().UTC(),
		tool: New(js, Options{Stream: dlStream, SourceStream: srcStream, SourceSubject: srcSubject, ObjectBucket: bucket})}
}

// add stores a record for payload, dead-lettered age ago, and returns its sequence.
func (w *world) add(t *testing.T, reason string, age time.Duration, payload []byte, edit ...func(*Record)) uint64 {
	t.Helper()
	idx := 2
	r := Record{SchemaVersion: 1, Reason: reason, Message: reason + ": the API said no\nsecond line", Stream: srcStream,
		Sequence: 7, Deliveries: 1, Subject: srcSubject, ActionID: "c0ffee00-0000-4000-8000-000000000001", Index: &idx,
		Tenant: "contoso", PayloadBase64: base64.StdEncoding.EncodeToString(payload), DeadLetteredAt: w.now.Add(-age)}
	if json.Valid(payload) {
		r.PayloadJSON = payload
	}
	for _, f := range edit {
		f(&r)
	}
	return w.addRaw(t, mustJSON(t, r))
}

func (w *world) addRaw(t *testing.T, data []byte) uint64 {
	t.Helper()
	ack, err := w.js.Publish(context.Background(), dlSubject, data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (w *world) msgs(t *testing.T, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := w.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	if err := each(ctx, s, func(e Entry) error {
		m, err := s.GetMsg(ctx, e.Seq)
		out = append(out, m)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func seqs(es []Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}

func TestListFilters(t *testing.T) {
	w := newWorld(t)
	a := w.add(t, "forbidden", 3*time.Hour, []byte(`{"id":"a"}`))
	b := w.add(t, "unknown_tenant", time.Hour, []byte(`{"id":"b"}`), func(r *Record) { r.Tenant, r.TenantID, r.Index = "", "8f2d1c3e", nil })
	c := w.add(t, "forbidden", 10*time.Minute, []byte(`{"id":"c"}`))
	ctx := context.Background()
	since2h, err := ParseSince("2h", w.now)
	if err != nil {
		t.Fatal(err)
	}
	since3339, err := ParseSince(w.now.Add(-90*time.Minute).Format(time.RFC3339), w.now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, []uint64{a, b, c}},
		{"reason", Filter{Reason: "forbidden"}, []uint64{a, c}},
		{"since duration", Filter{Since: since2h}, []uint64{b, c}},
		{"since RFC 3339", Filter{Since: since3339}, []uint64{b, c}},
		{"both", Filter{Reason: "forbidden", Since: since2h}, []uint64{c}},
		{"none", Filter{Reason: "internal"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := w.tool.List(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(seqs(got)) != fmt.Sprint(tc.want) {
				t.Errorf("listed %v, want %v", seqs(got), tc.want)
			}
		})
	}
	if _, err := ParseSince("yesterday", w.now); err == nil {
		t.Error("ParseSince accepted \"yesterday\"")
	}

	all, _ := w.tool.List(ctx, Filter{})
	var out bytes.Buffer
	if err := WriteList(&out, all); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("list printed %d lines, want a header and 3:\n%s", len(lines), out.String())
	}
	for _, want := range []string{"contoso/c0ffee00-0000-4000-8000-000000000001/2", "8f2d1c3e/c0ffee00-0000-4000-8000-000000000001/-",
		"unknown_tenant", w.now.Add(-time.Hour).Format(time.RFC3339), "the API said no second line"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("list lacks %q:\n%s", want, out.String())
		}
	}
}

func TestShow(t *testing.T) {
	w := newWorld(t)
	seq := w.add(t, "forbidden", time.Minute, []byte(`{"id":"c0ffee00-0000-4000-8000-000000000001","commands":[]}`))
	ctx := context.Background()
	e, err := w.tool.Get(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	payload, perr := w.tool.Payload(ctx, e)
	var out bytes.Buffer
	if err := WriteShow(&out, e, payload, perr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("record %d:", seq), `  "reason": "forbidden"`, "payload (59 bytes, inline):",
		"\n  \"commands\": []"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("show lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := w.tool.Get(ctx, seq+5); err == nil || !strings.Contains(err.Error(), "no record") {
		t.Errorf("Get of a missing sequence: %v, want a 'no record' error", err)
	}
	bin := w.add(t, "invalid_json", time.Minute, []byte{0xff, 0x00, 'x'})
	e, _ = w.tool.Get(ctx, bin)
	payload, perr = w.tool.Payload(ctx, e)
	out.Reset()
	_ = WriteShow(&out, e, payload, perr)
	if !strings.Contains(out.String(), "ff 00 78") {
		t.Errorf("a binary payload is not hex-dumped:\n%s", out.String())
	}
}

func TestReplayDryRunChangesNothing(t *testing.T) {
	w := newWorld(t)
	w.add(t, "forbidden", time.Minute, []byte(`{"id":"a"}`))
	w.add(t, "action_not_found", time.Minute, []byte(`{"id":"b"}`))
	var out bytes.Buffer
	rep, err := w.tool.Replay(context.Background(), ReplayOptions{DryRun: true, Rate: 1000, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Selected != 2 || rep.Replayed != 2 {
		t.Errorf("dry run report %+v, want 2 selected and 2 that would be replayed", rep)
	}
	if n := len(w.msgs(t, srcStream)); n != 0 {
		t.Errorf("dry run published %d events", n)
	}
	if n := len(w.msgs(t, dlStream)); n != 2 {
		t.Errorf("dry run left %d records, want 2", n)
	}
	if !strings.Contains(out.String(), "would replay") {
		t.Errorf("dry run output: %s", out.String())
	}
}

func TestReplayKeepsRecordsWithoutPubAck(t *testing.T) {
	w := newWorld(t)
	w.add(t, "forbidden", time.Minute, []byte(`{"id":"a"}`), func(r *Record) { r.Subject = "" })
	// No stream listens on this subject, so no PubAck ever comes.
	tool := New(w.js, Options{Stream: dlStream, SourceSubject: "nobody.listens", ObjectBucket: bucket})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tool.Replay(ctx, ReplayOptions{Rate: 1000})
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("replay without a source stream: %v, want no stream response", err)
	}
	if n := len(w.msgs(t, dlStream)); n != 1 {
		t.Errorf("%d records left, want the 1 that got no PubAck", n)
	}
}

func TestReplayRemovesRecordsAndIsIdempotent(t *testing.T) {
	w := newWorld(t)
	payloads := map[uint64][]byte{}
	for i := range 2 {
		p := []byte(fmt.Sprintf(`{"id":"c0ffee00-0000-4000-8000-00000000000%d"}`, i))
		payloads[w.add(t, "forbidden", time.Minute, p)] = p
	}
	other := w.add(t, "unknown_tenant", time.Minute, []byte(`{"id":"keep"}`))
	ctx := context.Background()
	only := Filter{Reason: "forbidden"}

	// A run that stopped after the PubAcks, before deleting anything.
	rep, err := w.tool.Replay(ctx, ReplayOptions{Filter: only, Rate: 1000, keepRecords: true})
	if err != nil || rep.Replayed != 2 || rep.Duplicates != 0 {
		t.Fatalf("first run: %+v, %v", rep, err)
	}
	// Running it again enqueues nothing new, and now removes the records.
	rep, err = w.tool.Replay(ctx, ReplayOptions{Filter: only, Rate: 1000})
	if err != nil || rep.Replayed != 2 || rep.Duplicates != 2 {
		t.Fatalf("second run: %+v, %v; want 2 replayed, both duplicates", rep, err)
	}
	rep, err = w.tool.Replay(ctx, ReplayOptions{Filter: only, Rate: 1000})
	if err != nil || rep.Selected != 0 {
		t.Fatalf("third run: %+v, %v; want nothing left to replay", rep, err)
	}
	src := w.msgs(t, srcStream)
	if len(src) != 2 {
		t.Fatalf("source stream holds %d events, want exactly 2", len(src))
	}
	for _, m := range src {
		var seq uint64
		if _, err := fmt.Sscanf(m.Header.Get(HeaderReplayOf), dlStream+"/%d", &seq); err != nil {
			t.Fatalf("header %s = %q: %v", HeaderReplayOf, m.Header.Get(HeaderReplayOf), err)
		}
		if !bytes.Equal(m.Data, payloads[seq]) || m.Subject != srcSubject {
			t.Errorf("replay of %d: %s %q, want %s %q", seq, m.Subject, m.Data, srcSubject, payloads[seq])
		}
		if m.Header.Get(jetstream.MsgIDHeader) != ReplayMsgID(dlStream, seq, payloads[seq]) {
			t.Errorf("replay of %d has Nats-Msg-Id %q", seq, m.Header.Get(jetstream.MsgIDHeader))
		}
	}
	left := w.msgs(t, dlStream)
	if len(left) != 1 || left[0].Sequence != other {
		t.Errorf("dead-letter stream keeps %d records, want only %d", len(left), other)
	}
}

func TestReplayObjectStoredPayload(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	obs, err := w.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	// A 300 KiB event: the record keeps a 1 KiB prefix and names the whole payload in the Object Store.
	payload := []byte(`{"id":"c0ffee00-0000-4000-8000-000000000001","pad":"` + strings.Repeat("x", 300<<10) + `"}`)
	sum := sha256.Sum256(payload)
	digest := hex.EncodeToString(sum[:])
	stored := func(name string, body []byte) func(*Record) {
		if _, err := obs.PutBytes(ctx, name, body); err != nil {
			t.Fatal(err)
		}
		return func(r *Record) {
			r.PayloadBase64 = base64.StdEncoding.EncodeToString(payload[:1024])
			r.PayloadJSON = nil
			r.PayloadTruncated, r.PayloadBytes, r.PayloadSHA256 = true, len(payload), digest
			r.PayloadObject = &result.ObjectRef{Bucket: bucket, Name: name, Size: int64(len(payload)), SHA256: digest}
		}
	}
	good := w.add(t, "internal", time.Minute, nil, stored("deadletters/good", payload))
	tampered := append(bytes.Clone(payload[:len(payload)-3]), `y"}`...)
	bad := w.add(t, "internal", time.Minute, nil, stored("deadletters/bad", tampered))
	missing := w.add(t, "internal", time.Minute, nil, stored("deadletters/gone", payload))
	if err := obs.Delete(ctx, "deadletters/gone"); err != nil {
		t.Fatal(err)
	}

	e, _ := w.tool.Get(ctx, good)
	got, err := w.tool.Payload(ctx, e)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("payload of the object-stored record: %d bytes, %v; want the whole %d", len(got), err, len(payload))
	}
	var out bytes.Buffer
	_ = WriteShow(&out, e, got, nil)
	if !strings.Contains(out.String(), "object lr-results/deadletters/good, SHA-256 checked") {
		t.Errorf("show does not say where the payload came from:\n%.400s", out.String())
	}

	rep, err := w.tool.Replay(ctx, ReplayOptions{Rate: 1000})
	var pe *PayloadError
	if !errors.As(err, &pe) || pe.Retryable() {
		t.Errorf("replay error %v, want a PayloadError for the bad records", err)
	}
	if rep.Replayed != 1 || rep.Skipped != 2 {
		t.Errorf("report %+v, want 1 replayed and 2 skipped", rep)
	}
	src := w.msgs(t, srcStream)
	if len(src) != 1 || !bytes.Equal(src[0].Data, payload) {
		t.Fatalf("source stream holds %d events; want the whole %d-byte payload once", len(src), len(payload))
	}
	var left []uint64
	for _, m := range w.msgs(t, dlStream) {
		left = append(left, m.Sequence)
	}
	if fmt.Sprint(left) != fmt.Sprint([]uint64{bad, missing}) {
		t.Errorf("records left %v, want the tampered and the missing one %v", left, []uint64{bad, missing})
	}
}

func TestSubjectMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.c", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true}, {"a.>", "a", false}, {"a.b", "a.b.c", false},
	} {
		if got := subjectMatches(tc.filter, tc.subject); got != tc.want {
			t.Errorf("subjectMatches(%q, %q) = %v", tc.filter, tc.subject, got)
		}
	}
}
