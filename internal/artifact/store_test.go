package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// startJS boots an embedded JetStream server with file storage and returns a client for it.
func startJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	return embeddedtest.JetStream(t)
}

func newTestStore(t testing.TB) (*Store, jetstream.JetStream) {
	t.Helper()
	js := startJS(t)
	st, err := NewStore(context.Background(), js, StoreConfig{Bucket: "test", Replicas: 1, MaxBytes: -1, Provision: true}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return st, js
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// chunkSubjects returns the chunk subjects of the store's bucket and their message counts.
func chunkSubjects(t testing.TB, st *Store) map[string]uint64 {
	t.Helper()
	si, err := st.stream.Info(context.Background(), jetstream.WithSubjectFilter(fmt.Sprintf(allChunksTmpl, st.bucket)))
	if err != nil {
		t.Fatal(err)
	}
	return si.State.Subjects
}

// waitChunks polls until the bucket has n chunk subjects, so that a test aborts an upload whose chunks are
// really on the server.
func waitChunks(t testing.TB, st *Store, n int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := chunkSubjects(t, st); len(got) != n {
			return fmt.Errorf("chunk subjects = %v, want %d", got, n)
		}
		return nil
	})
}

// put writes data through an Opener sink in uneven writes and commits.
func put(t testing.TB, st *Store, name string, data []byte, meta map[string]string) *objectSink {
	t.Helper()
	sink, err := st.Opener(context.Background(), name, meta)()
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 70_001)
		if _, err := sink.Write(rest[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		rest = rest[n:]
	}
	return sink.(*objectSink)
}

func TestNewStore(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	if _, err := NewStore(ctx, js, StoreConfig{Bucket: "lr-results"}, zerolog.Nop()); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("NewStore without Provision on a missing bucket: err = %v, want ErrBucketNotFound", err)
	}
	// No defaults: a config that is not filled in is refused before anything is created.
	for _, bad := range []StoreConfig{
		{},
		{Bucket: "lr-results", Provision: true, MaxBytes: -1},
		{Bucket: "lr-results", Provision: true, Replicas: 1},
		{Bucket: "lr-results", Provision: true, Replicas: 1, MaxBytes: -1, TTL: -time.Second},
	} {
		if _, err := NewStore(ctx, js, bad, zerolog.Nop()); err == nil || errors.Is(err, jetstream.ErrBucketNotFound) {
			t.Errorf("NewStore(%+v): err = %v, want a config error", bad, err)
		}
	}
	if _, err := js.ObjectStore(ctx, "lr-results"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("a refused config created the bucket: %v", err)
	}
	st, err := NewStore(ctx, js, StoreConfig{Bucket: "lr-results", Replicas: 1, Provision: true, TTL: time.Hour, MaxBytes: 1 << 30}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if st.Bucket() != "lr-results" {
		t.Errorf("Bucket() = %q, want %q", st.Bucket(), "lr-results")
	}
	si, err := st.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.Config.MaxAge != time.Hour || si.Config.MaxBytes != 1<<30 || si.Config.Storage != jetstream.FileStorage {
		t.Errorf("stream config MaxAge %v MaxBytes %d Storage %v, want 1h, 1 GiB, file", si.Config.MaxAge, si.Config.MaxBytes, si.Config.Storage)
	}
	if _, err := NewStore(ctx, js, StoreConfig{Bucket: "lr-results"}, zerolog.Nop()); err != nil {
		t.Errorf("binding the existing bucket without Provision: %v", err)
	}
}

func TestObjectName(t *testing.T) {
	if got, want := ObjectName("contoso", "A1B2", 3, KindFile), "contoso/a1b2/3/file"; got != want {
		t.Errorf("ObjectName = %q, want %q", got, want)
	}
}

func TestPutAndRead(t *testing.T) {
	st, _ := newTestStore(t)
	ctx := context.Background()
	tests := []struct {
		name string
		size int
	}{
		{name: "empty", size: 0},
		{name: "one byte", size: 1},
		{name: "exactly one chunk", size: 128 << 10},
		{name: "several chunks", size: 1<<20 + 12345},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(uint64(i), tt.size)
			name := ObjectName("t", "action", i, KindFile)
			ref, err := put(t, st, name, data, map[string]string{MetaOriginalName: "x.bin"}).Commit()
			if err != nil {
				t.Fatalf("Commit: %v", err)
			}
			sum := sha256.Sum256(data)
			if ref.Bucket != "test" || ref.Name != name || ref.Size != int64(tt.size) || ref.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("ref = %+v, want bucket test, name %s, size %d, sha256 %x", ref, name, tt.size, sum)
			}
			rc, err := st.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatalf("read back: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("read back %d bytes that differ from the %d written", len(got), len(data))
			}
		})
	}
}

func TestAbort(t *testing.T) {
	st, _ := newTestStore(t)
	ctx := context.Background()
	old := randomBytes(9, 300<<10)
	if _, err := put(t, st, "kept", old, nil).Commit(); err != nil {
		t.Fatal(err)
	}
	before := chunkSubjects(t, st)

	tests := []struct {
		name string
		obj  string
	}{
		{name: "new name", obj: "fresh"},
		{name: "existing name keeps the old object", obj: "kept"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := put(t, st, tt.obj, randomBytes(uint64(i), 1<<20), nil)
			waitChunks(t, st, len(before)+1)
			if err := sink.Abort(); err != nil {
				t.Fatalf("Abort: %v", err)
			}
			if !errors.Is(sink.err, errAborted) {
				t.Errorf("Put ended with %v, want the abort error", sink.err)
			}
			if got := chunkSubjects(t, st); len(got) != len(before) {
				t.Errorf("chunk subjects after Abort = %v, want only %v", got, before)
			}
			_, _, ok, err := st.Lookup(ctx, "fresh")
			if err != nil || ok {
				t.Errorf("Lookup(fresh) ok = %v err = %v, want no object", ok, err)
			}
			rc, err := st.Get(ctx, "kept")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, old) {
				t.Errorf("object kept: read %d bytes (err %v), want the %d original bytes", len(got), err, len(old))
			}
			if _, err := sink.Commit(); !errors.Is(err, ErrSinkClosed) {
				t.Errorf("Commit after Abort: err = %v, want ErrSinkClosed", err)
			}
		})
	}
}

func TestAbortOnContextCancel(t *testing.T) {
	st, _ := newTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	sink, err := st.Opener(ctx, "cancelled", nil)()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(randomBytes(1, 512<<10)); err != nil {
		t.Fatal(err)
	}
	waitChunks(t, st, 1)
	cancel()
	var werr error
	for werr == nil { // The pipe closes asynchronously after cancel.
		_, werr = sink.Write([]byte("more"))
	}
	if !errors.Is(werr, context.Canceled) {
		t.Errorf("Write after cancel: err = %v, want context.Canceled", werr)
	}
	if err := sink.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := chunkSubjects(t, st); len(got) != 0 {
		t.Errorf("chunk subjects after cancel + Abort = %v, want none", got)
	}
}

func TestPutTwiceReplaces(t *testing.T) {
	st, _ := newTestStore(t)
	ctx := context.Background()
	first := randomBytes(1, 400<<10)
	second := randomBytes(2, 200<<10)
	if _, err := put(t, st, "same", first, map[string]string{"attempt": "1"}).Commit(); err != nil {
		t.Fatal(err)
	}
	firstInfo, err := st.obs.GetInfo(ctx, "same")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := put(t, st, "same", second, map[string]string{"attempt": "2"}).Commit()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := st.obs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("%d objects after two puts of one name, want 1", len(objs))
	}
	subjects := chunkSubjects(t, st)
	if len(subjects) != 1 {
		t.Errorf("chunk subjects = %v, want only the second upload's", subjects)
	}
	if _, ok := subjects[fmt.Sprintf(chunkSubjTmpl, "test", firstInfo.NUID)]; ok {
		t.Errorf("first upload's chunks (nuid %s) still stored", firstInfo.NUID)
	}
	gotRef, meta, ok, err := st.Lookup(ctx, "same")
	if err != nil || !ok {
		t.Fatalf("Lookup ok = %v err = %v", ok, err)
	}
	if *gotRef != *ref || meta["attempt"] != "2" {
		t.Errorf("Lookup = %+v %v, want %+v with attempt 2", gotRef, meta, ref)
	}
}

func TestLookup(t *testing.T) {
	st, _ := newTestStore(t)
	ctx := context.Background()
	data := randomBytes(5, 300<<10)
	ref, err := put(t, st, "a/1/file", data, map[string]string{MetaOriginalName: "evil.exe"}).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := put(t, st, "deleted", data, nil).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		obj      string
		wantOK   bool
		wantMeta string
	}{
		{name: "stored", obj: "a/1/file", wantOK: true, wantMeta: "evil.exe"},
		{name: "missing", obj: "a/2/file"},
		{name: "deleted", obj: "deleted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, meta, ok, err := st.Lookup(ctx, tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if *got != *ref || meta[MetaOriginalName] != tt.wantMeta {
				t.Errorf("Lookup = %+v %v, want %+v with original name %q", got, meta, ref, tt.wantMeta)
			}
		})
	}

	t.Run("chunks gone", func(t *testing.T) {
		info, err := st.obs.GetInfo(ctx, "a/1/file")
		if err != nil {
			t.Fatal(err)
		}
		// Simulate TTL expiry of the chunks, which are older than the meta message.
		if err := st.stream.Purge(ctx, jetstream.WithPurgeSubject(fmt.Sprintf(chunkSubjTmpl, "test", info.NUID))); err != nil {
			t.Fatal(err)
		}
		if _, _, ok, err := st.Lookup(ctx, "a/1/file"); err != nil || ok {
			t.Errorf("Lookup of an object without chunks: ok = %v err = %v, want not ok", ok, err)
		}
	})
}

func TestAnnotateStored(t *testing.T) {
	st, _ := newTestStore(t)
	ctx := context.Background()
	sink := put(t, st, "annotated", randomBytes(3, 200<<10), map[string]string{MetaOriginalName: "a.bin"})
	var s Sink = sink
	a, ok := s.(Annotator)
	if !ok {
		t.Fatal("object sink does not implement Annotator")
	}
	a.Annotate(map[string]string{MetaCompressedBytes: "12345"})
	if _, err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	_, meta, ok, err := st.Lookup(ctx, "annotated")
	if err != nil || !ok {
		t.Fatalf("Lookup ok = %v err = %v", ok, err)
	}
	if meta[MetaCompressedBytes] != "12345" || meta[MetaOriginalName] != "a.bin" {
		t.Errorf("metadata = %v, want the opener's and the annotated values", meta)
	}
}

func TestCleanOrphans(t *testing.T) {
	st, js := newTestStore(t)
	ctx := context.Background()
	if _, err := put(t, st, "live", randomBytes(1, 300<<10), nil).Commit(); err != nil {
		t.Fatal(err)
	}
	// A crashed upload: chunks on a fresh nuid subject, never a meta message.
	orphan := fmt.Sprintf(chunkSubjTmpl, "test", "CRASHEDUPLOADNUID00000")
	for range 3 {
		if _, err := js.Publish(ctx, orphan, bytes.Repeat([]byte("x"), 1000)); err != nil {
			t.Fatal(err)
		}
	}
	liveSubjects := chunkSubjects(t, st)
	if len(liveSubjects) != 2 {
		t.Fatalf("chunk subjects before cleaning = %v, want the live object's and the orphan", liveSubjects)
	}

	t.Run("young orphan kept", func(t *testing.T) {
		n, err := st.CleanOrphans(ctx, time.Hour)
		if err != nil || n != 0 {
			t.Fatalf("CleanOrphans(1h) = %d, %v; want 0, nil", n, err)
		}
		if got := chunkSubjects(t, st); len(got) != 2 {
			t.Errorf("chunk subjects = %v, want both kept", got)
		}
	})
	t.Run("old orphan purged", func(t *testing.T) {
		st.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
		defer func() { st.now = time.Now }()
		n, err := st.CleanOrphans(ctx, time.Hour)
		if err != nil || n != 1 {
			t.Fatalf("CleanOrphans(1h) two hours later = %d, %v; want 1, nil", n, err)
		}
		got := chunkSubjects(t, st)
		if _, ok := got[orphan]; ok || len(got) != 1 {
			t.Errorf("chunk subjects = %v, want only the live object's", got)
		}
		if _, _, ok, err := st.Lookup(ctx, "live"); err != nil || !ok {
			t.Errorf("live object after cleaning: ok = %v err = %v, want intact", ok, err)
		}
	})
	t.Run("nothing left", func(t *testing.T) {
		n, err := st.CleanOrphans(ctx, 0)
		if err != nil || n != 0 {
			t.Errorf("CleanOrphans again = %d, %v; want 0, nil", n, err)
		}
	})
}
