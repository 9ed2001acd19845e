package app

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// TestLagSampler reads a real consumer's lag from an embedded server: pending, ack pending, redelivered, the
// age of the oldest unacknowledged event as the ack floor moves, and the object bucket's size and cap.
func TestLagSampler(t *testing.T) {
	js := embeddedtest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SRC", Subjects: []string{"src.>"}})
	if err != nil {
		t.Fatal(err)
	}
	// A message on another subject before the filtered ones: the oldest pending lookup must skip it.
	if _, err := js.Publish(ctx, "src.other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish(ctx, "src.finished", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateConsumer(ctx, "SRC", jetstream.ConsumerConfig{Durable: "relay", AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: "src.finished", AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "objs", MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, "a/0/output", bytes.Repeat([]byte("z"), 10_000)); err != nil {
		t.Fatal(err)
	}

	first, err := st.GetMsg(ctx, 2) // sequence 1 is src.other
	if err != nil {
		t.Fatal(err)
	}
	second, err := st.GetMsg(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	now := first.Time.Add(100 * time.Second)
	reg := prometheus.NewPedanticRegistry()
	s := &lagSampler{js: js, stream: "SRC", consumer: "relay", bucket: "objs", every: time.Hour,
		now: func() time.Time { return now }, m: registerOpsMetrics(reg, func() bool { return true }), log: zerolog.Nop()}

	sample := func() {
		t.Helper()
		if err := s.sampleConsumer(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.sampleBucket(ctx); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, g prometheus.Gauge, want float64) {
		t.Helper()
		if got := gaugeValue(t, g); got != want {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}

	sample()
	expect("pending", s.m.pending, 3)
	expect("ack pending", s.m.ackPending, 0)
	expect("oldest age", s.m.oldestAge, 100)
	if got := gaugeValue(t, s.m.objectBytes); got < 10_000 {
		t.Errorf("object store bytes: got %v, want at least the 10000 bytes stored", got)
	}
	expect("object store max bytes", s.m.objectMaxBytes, 1<<20)

	// One delivered and not acknowledged: still the oldest.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 1 {
		t.Fatalf("fetched %d messages, want 1", len(msgs))
	}
	sample()
	expect("pending after one delivery", s.m.pending, 2)
	expect("ack pending after one delivery", s.m.ackPending, 1)
	expect("oldest age after one delivery", s.m.oldestAge, 100)

	// Acknowledged: the floor moves and the second message is the oldest.
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	sample()
	expect("pending after the ack", s.m.pending, 2)
	expect("ack pending after the ack", s.m.ackPending, 0)
	expect("oldest age after the ack", s.m.oldestAge, now.Sub(second.Time).Seconds())

	// Handed back and delivered again: counted as redelivered until acknowledged. A nak is not confirmed, so
	// the next pull may get the third message first: it is held, unacknowledged, and acknowledged at the end.
	b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var held []jetstream.Msg
	for m := range b.Messages() {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	var again jetstream.Msg
	testutil.Eventually(t, 10*time.Second, func() error {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if md, err := m.Metadata(); err == nil && md.NumDelivered == 2 {
				again = m
			} else {
				held = append(held, m)
			}
		}
		if again == nil {
			return errors.New("the nak'ed message was not delivered again")
		}
		return nil
	})
	sample()
	expect("redelivered", s.m.redelivered, 1)
	expect("ack pending while redelivered", s.m.ackPending, float64(1+len(held)))
	expect("oldest age while redelivered", s.m.oldestAge, now.Sub(second.Time).Seconds())
	for _, m := range append(held, again) {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Everything acknowledged: no age.
	for n := len(held); n < 1; {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	sample()
	expect("pending at the end", s.m.pending, 0)
	expect("ack pending at the end", s.m.ackPending, 0)
	expect("redelivered at the end", s.m.redelivered, 0)
	expect("oldest age at the end", s.m.oldestAge, 0)
}

// TestSamplerWithoutConsumer checks that a sample before the consumer exists fails without touching the gauges.
func TestSamplerWithoutConsumer(t *testing.T) {
	js := embeddedtest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SRC", Subjects: []string{"src.>"}}); err != nil {
		t.Fatal(err)
	}
	s := &lagSampler{js: js, stream: "SRC", consumer: "missing", bucket: "none", every: time.Hour, now: time.Now,
		m: registerOpsMetrics(prometheus.NewPedanticRegistry(), func() bool { return false }), log: zerolog.Nop()}
	s.m.pending.Set(7)
	if err := s.sampleConsumer(ctx); err == nil {
		t.Error("sampling a missing consumer: got no error")
	}
	if err := s.sampleBucket(ctx); err == nil {
		t.Error("sampling a missing bucket: got no error")
	}
	if got := gaugeValue(t, s.m.pending); got != 7 {
		t.Errorf("pending: got %v, want the last value 7 kept", got)
	}
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
