package artifact_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/getfile"

	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
)

// getfileOptions are the GetFile caps of the default configuration (LR_INLINE_MAX_BYTES, LR_GETFILE_MAX_BYTES,
// LR_GETFILE_MAX_RATIO): getfile has no defaults of its own.
func getfileOptions(spill artifact.Opener) getfile.Options {
	return getfile.Options{InlineMax: 64 << 10, MaxBytes: 4 << 30, MaxRatio: 200, Spill: spill}
}

// newStore boots an embedded JetStream server with file storage and binds a store to bucket on it.
func newStore(t testing.TB, bucket string) (*artifact.Store, jetstream.JetStream) {
	t.Helper()
	js := embeddedtest.JetStream(t)
	st, err := artifact.NewStore(context.Background(), js, artifact.StoreConfig{Bucket: bucket, Replicas: 1, MaxBytes: -1, Provision: true}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return st, js
}

// TestGetFileIntoStore runs getfile.Process against a real Object Store: a large file lands as one object
// whose metadata rebuilds the File, and a bomb leaves nothing behind.
func TestGetFileIntoStore(t *testing.T) {
	st, js := newStore(t, "it")
	ctx := context.Background()
	content := make([]byte, 3<<20)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range content {
		content[i] = 'a' + byte(r.IntN(16))
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(content)
	zw.Close()
	sum := sha256.Sum256(content)
	bomb := make([]byte, 8<<20)
	var gzBomb bytes.Buffer
	zw = gzip.NewWriter(&gzBomb)
	zw.Write(bomb)
	zw.Close()

	tests := []struct {
		name     string
		in       []byte
		wantCode string
	}{
		{name: "large file stored", in: gz.Bytes()},
		{name: "redelivery replaces", in: gz.Bytes()},
		{name: "bomb leaves nothing", in: gzBomb.Bytes(), wantCode: getfile.CodeDecompressionBomb},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := artifact.ObjectName("t", "act", 1, artifact.KindFile)
			if tt.wantCode != "" {
				name = artifact.ObjectName("t", "act", i, artifact.KindFile)
			}
			spill := st.Opener(ctx, name, map[string]string{artifact.MetaOriginalName: "big.txt"})
			f, prob, err := getfile.Process(ctx, bytes.NewReader(tt.in), "big.txt.gz", getfileOptions(spill))
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantCode != "" {
				if prob == nil || prob.Code != tt.wantCode {
					t.Fatalf("problem = %+v, want %s", prob, tt.wantCode)
				}
				if _, _, ok, err := st.Lookup(ctx, name); ok || err != nil {
					t.Errorf("Lookup after bomb: ok = %v err = %v, want no object", ok, err)
				}
				if n := countChunkSubjects(t, js); n != 1 {
					t.Errorf("%d chunk subjects, want only the stored file's", n)
				}
				return
			}
			if prob != nil {
				t.Fatalf("problem = %+v", prob)
			}
			if f.Object == nil || f.Object.SHA256 != hex.EncodeToString(sum[:]) || f.Object.Size != int64(len(content)) {
				t.Fatalf("object = %+v, want %d bytes sha256 %x", f.Object, len(content), sum)
			}
			ref, meta, ok, err := st.Lookup(ctx, name)
			if err != nil || !ok || *ref != *f.Object {
				t.Fatalf("Lookup = %+v %v %v, want %+v", ref, ok, err, f.Object)
			}
			if meta[artifact.MetaCompressedBytes] != strconv.Itoa(len(tt.in)) || meta[artifact.MetaOriginalName] != "big.txt" {
				t.Errorf("metadata = %v, want compressed bytes %d and original name big.txt", meta, len(tt.in))
			}
			rc, err := st.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, content) {
				t.Errorf("read back %d bytes (err %v), want the %d content bytes", len(got), err, len(content))
			}
			if n := countChunkSubjects(t, js); n != 1 {
				t.Errorf("%d chunk subjects, want 1", n)
			}
		})
	}
}

func countChunkSubjects(t testing.TB, js jetstream.JetStream) int {
	t.Helper()
	s, err := js.Stream(context.Background(), "OBJ_it")
	if err != nil {
		t.Fatal(err)
	}
	si, err := s.Info(context.Background(), jetstream.WithSubjectFilter("$O.it.C.>"))
	if err != nil {
		t.Fatal(err)
	}
	return len(si.State.Subjects)
}
