package artifact

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/result"
)

// errAborted is what the Object Store's Put reads when the sink is aborted; nats.go then purges the chunks it
// already published.
var errAborted = errors.New("artifact: upload aborted")

// cleanupTimeout bounds the deletes the sink makes after its caller may have given up.
const cleanupTimeout = 30 * time.Second

// chunkSize is the Object Store's default chunk size, which Put uses when ObjectMeta sets none.
const chunkSize = 128 << 10

// objectSink streams into ObjectStore.Put through an io.Pipe. Put runs in a goroutine that the sink starts
// on open and waits for in Commit or Abort, so no goroutine outlives the sink.
//
// Put gets a context without the caller's cancellation: when nats.go aborts an upload it purges the partial
// chunks with that same context, and a cancelled one would leave them behind. The caller's cancellation
// instead closes the pipe, which makes Put fail and purge.
type objectSink struct {
	store *Store
	name  string
	// ctx is the caller's context, consulted to report why a write failed.
	ctx context.Context
	// bg is ctx without its cancellation, for Put and for clean-up after the caller gave up.
	bg context.Context
	// meta is the map given to Put in ObjectMeta.Metadata. Put serialises the object's info only after it
	// reads EOF from the pipe, so values added before the pipe is closed (Annotate) are stored with the
	// object atomically. TestAnnotateStored guards this reliance on nats.go's Put.
	meta map[string]string
	pw   *io.PipeWriter
	// bw gathers writes into whole chunks: Put publishes what each pipe read returns as one chunk, and
	// callers write in pieces smaller than the Object Store's 128 KiB chunks.
	bw   *bufio.Writer
	h    hash.Hash
	n    int64
	stop func() bool
	done chan struct{}
	// info and err are Put's results, readable once done is closed.
	info   *jetstream.ObjectInfo
	err    error
	closed bool
}

func (s *Store) open(ctx context.Context, name string, meta map[string]string) *objectSink {
	pr, pw := io.Pipe()
	m := maps.Clone(meta)
	if m == nil {
		m = map[string]string{}
	}
	k := &objectSink{store: s, name: name, ctx: ctx, bg: context.WithoutCancel(ctx), meta: m, pw: pw,
		bw: bufio.NewWriterSize(pw, chunkSize), h: sha256.New(), done: make(chan struct{})}
	k.stop = context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	go func() {
		defer close(k.done)
		k.info, k.err = s.obs.Put(k.bg, jetstream.ObjectMeta{Name: name, Metadata: m}, pr)
		// Unblock a writer still waiting on the pipe when Put failed early.
		pr.CloseWithError(errors.Join(errAborted, k.err))
	}()
	return k
}

// Write streams p to the Object Store; it blocks while the store is slower than the caller.
func (k *objectSink) Write(p []byte) (int, error) {
	if k.closed {
		return 0, ErrSinkClosed
	}
	n, err := k.bw.Write(p)
	k.h.Write(p[:n])
	k.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("write object %q: %w", k.name, errors.Join(k.ctx.Err(), err))
	}
	return n, nil
}

// Annotate adds metadata to the object; it must be called before Commit.
func (k *objectSink) Annotate(meta map[string]string) {
	if k.closed {
		return
	}
	maps.Copy(k.meta, meta)
}

// Commit ends the upload, waits for the Object Store to confirm it, and checks the stored digest against the
// digest of what was written.
func (k *objectSink) Commit() (*result.ObjectRef, error) {
	if k.closed {
		return nil, ErrSinkClosed
	}
	k.closed = true
	k.stop()
	if err := k.bw.Flush(); err != nil {
		k.pw.CloseWithError(errAborted)
		<-k.done
		return nil, fmt.Errorf("store object %q: %w", k.name, errors.Join(k.ctx.Err(), err))
	}
	_ = k.pw.Close()
	<-k.done
	if k.err != nil {
		return nil, fmt.Errorf("store object %q: %w", k.name, k.err)
	}
	sum := k.h.Sum(nil)
	stored, err := jetstream.DecodeObjectDigest(k.info.Digest)
	if err != nil || hex.EncodeToString(stored) != hex.EncodeToString(sum) || int64(k.info.Size) != k.n {
		// Never hand out a claim check for content that is not what we were given.
		ctx, cancel := context.WithTimeout(k.bg, cleanupTimeout)
		defer cancel()
		delErr := k.store.obs.Delete(ctx, k.name)
		return nil, errors.Join(fmt.Errorf("store object %q: digest %q size %d, wrote sha256 %x size %d: %w",
			k.name, k.info.Digest, k.info.Size, sum, k.n, ErrDigestMismatch), delErr)
	}
	return &result.ObjectRef{Bucket: k.store.bucket, Name: k.name, Size: k.n, SHA256: hex.EncodeToString(sum)}, nil
}

// Abort ends the upload with an error so that Put fails and purges the chunks already published; no meta
// message is written, so no object appears and an earlier object of the same name stays as it was. If the
// purge itself fails (the server is unreachable), the chunks are left to CleanOrphans. Abort after Commit or
// Abort does nothing.
func (k *objectSink) Abort() error {
	if k.closed {
		return nil
	}
	k.closed = true
	k.stop()
	k.pw.CloseWithError(errAborted)
	<-k.done
	k.store.log.Debug().Str("bucket", k.store.bucket).Str("object", k.name).Int64("bytes_written", k.n).
		Msg("upload aborted; partial chunks purged")
	if k.err == nil {
		// Put read EOF before our error: it cannot, since only Commit closes the pipe without an error, but
		// if it ever did, remove the object rather than leave content the caller disowned.
		ctx, cancel := context.WithTimeout(k.bg, cleanupTimeout)
		defer cancel()
		if err := k.store.obs.Delete(ctx, k.name); err != nil {
			return fmt.Errorf("abort object %q: %w", k.name, err)
		}
	}
	return nil
}
