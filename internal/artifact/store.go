package artifact

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/provision"
	"github.com/lr-relay/lr-relay/internal/result"
)

// Object kinds used in object names, so that one command's script output and GetFile content never collide.
const (
	KindOutput = "output"
	KindFile   = "file"
	// KindErrors holds a script's script_errors when they are too large to go in the event.
	KindErrors = "errors"
)

// Metadata keys the relay stores with an object so that Lookup can rebuild a result without downloading it.
const (
	MetaOriginalName    = "lr-original-name"
	MetaCompressedBytes = "lr-compressed-bytes"
)

// The Object Store's stream layout (nats.go object.go): one stream per bucket, chunks on
// $O.<bucket>.C.<nuid>, one rolled-up meta message per object on $O.<bucket>.M.<base64url(name)>.
const (
	streamNameTmpl = "OBJ_%s"
	chunkSubjTmpl  = "$O.%s.C.%s"
	allChunksTmpl  = "$O.%s.C.>"
)

// ErrDigestMismatch is returned by Commit when the digest the Object Store recorded differs from the digest
// of the bytes the sink was given; the object is deleted, and the caller should retry.
var ErrDigestMismatch = errors.New("artifact: object store digest does not match the written content")

// ErrSinkClosed is returned by Write or Commit on a sink that was already committed or aborted.
var ErrSinkClosed = errors.New("artifact: sink already committed or aborted")

// StoreConfig configures the Object Store bucket that holds large results. It has no defaults: they live in
// the configuration (internal/config), and NewStore refuses a config that is not filled in.
type StoreConfig struct {
	// Bucket is the Object Store bucket name (LR_OBJECT_BUCKET).
	Bucket string
	// TTL, MaxBytes and Replicas are used only when the bucket is created (Provision); an existing bucket is
	// used as it is.
	//
	// TTL is how long objects are kept (the stream's MaxAge); zero keeps them until MaxBytes pushes them out.
	// It must outlive the time consumers need to fetch a claim check.
	TTL time.Duration
	// MaxBytes caps the bucket's size; -1 means unlimited (LR_OBJECT_MAX_BYTES).
	MaxBytes int64
	// Replicas is the bucket's replication factor (LR_STREAM_REPLICAS).
	Replicas int
	// Provision creates the bucket when it is missing; without it a missing bucket is an error, for
	// deployments where the operator owns stream configuration.
	Provision bool
}

// Store writes and reads large results in a JetStream Object Store bucket. It is safe for concurrent use.
type Store struct {
	bucket string
	obs    jetstream.ObjectStore
	stream jetstream.Stream
	log    zerolog.Logger
	now    func() time.Time
}

// NewStore binds the configured bucket, creating it first when cfg.Provision is set and it does not exist.
func NewStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig, log zerolog.Logger) (*Store, error) {
	bucket := cfg.Bucket
	switch {
	case bucket == "":
		return nil, errors.New("artifact: no object store bucket name")
	case cfg.Provision && cfg.TTL < 0:
		return nil, fmt.Errorf("artifact: bucket %q: negative TTL %s", bucket, cfg.TTL)
	case cfg.Provision && (cfg.MaxBytes == 0 || cfg.MaxBytes < -1):
		return nil, fmt.Errorf("artifact: bucket %q: max bytes must be -1 (no cap) or positive, got %d", bucket, cfg.MaxBytes)
	case cfg.Provision && cfg.Replicas < 1:
		return nil, fmt.Errorf("artifact: bucket %q: replicas must be at least 1, got %d", bucket, cfg.Replicas)
	}
	obs, err := provision.ObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "lr-relay large results (claim checks)",
		TTL:         cfg.TTL,
		MaxBytes:    cfg.MaxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}, cfg.Provision)
	if err != nil {
		return nil, fmt.Errorf("bind object store bucket %q: %w", bucket, err)
	}
	stream, err := js.Stream(ctx, fmt.Sprintf(streamNameTmpl, bucket))
	if err != nil {
		return nil, fmt.Errorf("bind stream of object store bucket %q: %w", bucket, err)
	}
	return &Store{bucket: bucket, obs: obs, stream: stream, log: log, now: time.Now}, nil
}

// Bucket returns the name of the bucket the store writes to.
func (s *Store) Bucket() string { return s.bucket }

// ObjectName returns the deterministic object name of one command's content, so that a redelivered event
// overwrites (rather than duplicates) what an earlier attempt stored, and Lookup can find it. The tenant comes
// first: an action id is chosen by whoever publishes the event, so two tenants may name the same one, and
// neither may ever read, reuse or overwrite what the other's credentials fetched.
func ObjectName(tenant, actionID string, index int, kind string) string {
	return fmt.Sprintf("%s/%s/%d/%s", tenant, strings.ToLower(actionID), index, kind)
}

// Opener returns an Opener that streams content into the object called name, with meta stored as the
// object's metadata. Nothing touches the store until the Opener is called. Cancelling ctx aborts an upload
// in progress (the sink's next Write fails and the caller must Abort).
func (s *Store) Opener(ctx context.Context, name string, meta map[string]string) Opener {
	return func() (Sink, error) {
		return s.open(ctx, name, meta), nil
	}
}

// Put stores data whole as the object called name, with meta as its metadata, through the same sink as a
// streamed upload (so the digest is checked the same way).
func (s *Store) Put(ctx context.Context, name string, meta map[string]string, data []byte) (*result.ObjectRef, error) {
	sink := s.open(ctx, name, meta)
	if _, err := sink.Write(data); err != nil {
		_ = sink.Abort()
		return nil, fmt.Errorf("storing %s: %w", name, err)
	}
	ref, err := sink.Commit()
	if err != nil {
		return nil, fmt.Errorf("storing %s: %w", name, err)
	}
	return ref, nil
}

// Lookup returns the reference and metadata of a complete object, so that a redelivered event can reuse
// what an earlier attempt stored instead of downloading again. ok is false when there is no such object, it
// was deleted, it has no digest, or some of its chunks are gone (expired by TTL before its meta message).
func (s *Store) Lookup(ctx context.Context, name string) (*result.ObjectRef, map[string]string, bool, error) {
	info, err := s.obs.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("look up object %q: %w", name, err)
	}
	if info.Deleted || info.Digest == "" || info.NUID == "" {
		return nil, nil, false, nil
	}
	sum, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		// A foreign or damaged meta message is not ours to reuse; the caller will overwrite it.
		return nil, nil, false, nil
	}
	if info.Chunks > 0 {
		subj := fmt.Sprintf(chunkSubjTmpl, s.bucket, info.NUID)
		si, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			return nil, nil, false, fmt.Errorf("count chunks of object %q: %w", name, err)
		}
		if si.State.Subjects[subj] != uint64(info.Chunks) {
			return nil, nil, false, nil
		}
	}
	ref := &result.ObjectRef{Bucket: s.bucket, Name: name, Size: int64(info.Size), SHA256: hex.EncodeToString(sum)}
	return ref, maps.Clone(info.Metadata), true, nil
}

// getTimeout bounds a whole download when the caller's context has no deadline: nats.go would otherwise
// apply its 5 s default request timeout to the entire transfer, which a large object cannot meet.
const getTimeout = time.Hour

// Get opens a stored object for reading. The reader verifies the object's digest when it reaches the end.
// ctx's deadline bounds the whole download (getTimeout when it has none); Close releases it.
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, getTimeout)
	}
	r, err := s.obs.Get(ctx, name)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("get object %q: %w", name, err)
	}
	return &objectReader{ObjectResult: r, cancel: cancel}, nil
}

// objectReader ends the download's context when the reader is closed.
type objectReader struct {
	jetstream.ObjectResult
	cancel context.CancelFunc
}

func (r *objectReader) Close() error {
	defer r.cancel()
	return r.ObjectResult.Close()
}

// Delete removes an object and its chunks.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := s.obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete object %q: %w", name, err)
	}
	return nil
}

// CleanOrphans purges the chunks of uploads that never finished: a process that dies mid-upload leaves
// chunks that no object's meta message points to, and nats.go never cleans them. A chunk subject counts as an
// orphan when no live object references its nuid and its newest chunk is older than olderThan; olderThan must
// comfortably exceed the longest pause inside a running upload, or a slow upload loses its chunks. It
// returns how many chunk subjects it purged.
func (s *Store) CleanOrphans(ctx context.Context, olderThan time.Duration) (int, error) {
	// Snapshot the chunk subjects before listing objects: an upload that completes in between is then seen
	// as live, never as an orphan.
	all := fmt.Sprintf(allChunksTmpl, s.bucket)
	si, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(all))
	if err != nil {
		return 0, fmt.Errorf("list chunk subjects of bucket %q: %w", s.bucket, err)
	}
	if len(si.State.Subjects) == 0 {
		return 0, nil
	}
	objs, err := s.obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, fmt.Errorf("list objects of bucket %q: %w", s.bucket, err)
	}
	live := make(map[string]bool, len(objs))
	for _, o := range objs {
		live[o.NUID] = true
	}
	prefix := fmt.Sprintf(chunkSubjTmpl, s.bucket, "")
	purged := 0
	var errs []error
	for subj := range si.State.Subjects {
		nuid := strings.TrimPrefix(subj, prefix)
		if live[nuid] {
			continue
		}
		last, err := s.stream.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read newest chunk of %q: %w", subj, err))
			continue
		}
		age := s.now().Sub(last.Time)
		if age < olderThan {
			continue
		}
		if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			errs = append(errs, fmt.Errorf("purge orphan chunks %q: %w", subj, err))
			continue
		}
		purged++
		s.log.Info().Str("bucket", s.bucket).Str("nuid", nuid).Float64("age_seconds", age.Seconds()).
			Msg("purged chunks of an unfinished upload")
	}
	return purged, errors.Join(errs...)
}

// Annotate adds metadata to a stored object without touching its content (digest, size and chunks stay), so
// that a later Lookup can rebuild a whole result from it.
func (s *Store) Annotate(ctx context.Context, name string, extra map[string]string) error {
	info, err := s.obs.GetInfo(ctx, name)
	if err != nil {
		return fmt.Errorf("annotate object %q: %w", name, err)
	}
	meta := info.ObjectMeta
	merged := maps.Clone(meta.Metadata)
	if merged == nil {
		merged = make(map[string]string, len(extra))
	}
	maps.Copy(merged, extra)
	meta.Metadata = merged
	if err := s.obs.UpdateMeta(ctx, name, meta); err != nil {
		return fmt.Errorf("annotate object %q: %w", name, err)
	}
	return nil
}
