package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// lagSampleEvery is how often the consumer's lag and the object bucket's fill are read from the server: often
// enough for an alert that waits minutes, rare enough to cost nothing (two JetStream API requests, plus one
// message lookup while there is a backlog).
const lagSampleEvery = 15 * time.Second

// lagSampler sets the consumer lag and object store gauges from the server's view of the durable consumer and
// of the bucket's backing stream. Every replica samples the same shared consumer, so the replicas report the
// same figures: aggregate them with max, not sum.
type lagSampler struct {
	js       jetstream.JetStream
	stream   string // source stream
	consumer string // durable consumer
	bucket   string // object store bucket
	every    time.Duration
	now      func() time.Time
	m        *opsMetrics
	log      zerolog.Logger
}

// run samples at once and then every s.every until ctx ends. Until the first consumer sample succeeds (the
// relay binds or creates the consumer after the sampler starts) it retries every second, so the gauges are
// filled as soon as the consumer exists. A failed sample (NATS down, consumer not created yet) leaves the
// gauges at their last values and is logged at debug level: readiness already reports an outage.
func (s *lagSampler) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	sampled := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.sampleConsumer(sctx)
		if err != nil && ctx.Err() == nil {
			s.log.Debug().Err(err).Msg("sampling the consumer's lag failed; will retry")
		}
		sampled = sampled || err == nil
		if err := s.sampleBucket(sctx); err != nil && ctx.Err() == nil {
			s.log.Debug().Err(err).Msg("sampling the object store's size failed; will retry")
		}
		cancel()
		next := s.every
		if !sampled {
			next = min(time.Second, s.every)
		}
		t.Reset(next)
	}
}

// sampleConsumer reads the durable consumer's info. The oldest unacknowledged event is the first message after
// the ack floor that matches the consumer's filter: every message up to the floor is acknowledged, and the
// next matching one is not (or the floor would have moved past it).
func (s *lagSampler) sampleConsumer(ctx context.Context) error {
	cons, err := s.js.Consumer(ctx, s.stream, s.consumer)
	if err != nil {
		return fmt.Errorf("consumer %q on %q: %w", s.consumer, s.stream, err)
	}
	info := cons.CachedInfo()
	s.m.pending.Set(float64(info.NumPending))
	s.m.ackPending.Set(float64(info.NumAckPending))
	s.m.redelivered.Set(float64(info.NumRedelivered))
	if info.NumPending == 0 && info.NumAckPending == 0 {
		s.m.oldestAge.Set(0)
		return nil
	}
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return fmt.Errorf("stream %q: %w", s.stream, err)
	}
	filter := info.Config.FilterSubject
	if filter == "" {
		filter = ">"
	}
	msg, err := st.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(filter))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// Acknowledged (or removed by the stream's limits) since the info was read.
		s.m.oldestAge.Set(0)
		return nil
	case err != nil:
		return fmt.Errorf("oldest pending message of %q: %w", s.stream, err)
	}
	s.m.oldestAge.Set(max(0, s.now().Sub(msg.Time).Seconds()))
	return nil
}

// sampleBucket reads the size and the size cap of the object store's backing stream.
func (s *lagSampler) sampleBucket(ctx context.Context) error {
	st, err := s.js.Stream(ctx, "OBJ_"+s.bucket)
	if err != nil {
		return fmt.Errorf("object store bucket %q: %w", s.bucket, err)
	}
	info := st.CachedInfo()
	s.m.objectBytes.Set(float64(info.State.Bytes))
	s.m.objectMaxBytes.Set(float64(info.Config.MaxBytes))
	return nil
}
