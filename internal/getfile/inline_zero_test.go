package getfile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// TestInlineZero is LR_INLINE_MAX_BYTES=0: no content goes inline; every non-empty file goes to the sink and
// the result carries its size, digest and object reference.
func TestInlineZero(t *testing.T) {
	tests := []struct {
		name      string
		content   []byte
		withSink  bool
		wantStore bool
	}{
		{name: "one byte to the sink", content: []byte("x"), withSink: true, wantStore: true},
		{name: "small file to the sink", content: []byte("small collected file\n"), withSink: true, wantStore: true},
		{name: "no sink: described only", content: []byte("small collected file\n")},
		{name: "empty file: nothing to store", content: []byte{}, withSink: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			opts := testOptions(0, nil)
			var calls *int
			if tt.withSink {
				opts.Spill, calls = opener(sink)
			}
			f, prob, err := Process(context.Background(), bytes.NewReader(gz(t, tt.content)), "c.txt.gz", opts)
			if err != nil || prob != nil {
				t.Fatalf("Process: problem %+v, err %v; want neither", prob, err)
			}
			sum := sha256.Sum256(tt.content)
			if f.ContentBase64 != "" || f.Bytes != int64(len(tt.content)) || f.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("content %q, bytes %d, sha256 %s; want no content, %d, %x", f.ContentBase64, f.Bytes, f.SHA256, len(tt.content), sum)
			}
			if len(tt.content) == 0 {
				if !f.Inline || f.Object != nil || *calls != 0 {
					t.Errorf("inline %v, object %+v, sink opened %d times; want the empty file inline, no object", f.Inline, f.Object, *calls)
				}
				return
			}
			if f.Inline {
				t.Errorf("inline = true, want false")
			}
			if !tt.wantStore {
				if f.Object != nil || f.NotInlineReason != "no content inline (inline cap 0 bytes); no object store configured" {
					t.Errorf("object %+v, reason %q; want no object and the reason", f.Object, f.NotInlineReason)
				}
				return
			}
			if *calls != 1 || !sink.committed || !bytes.Equal(sink.buf.Bytes(), tt.content) {
				t.Fatalf("sink opened %d times, committed %v, holds %q; want 1, true, %q", *calls, sink.committed, sink.buf.Bytes(), tt.content)
			}
			if f.Object == nil || f.Object.SHA256 != f.SHA256 || f.Object.Size != f.Bytes ||
				f.NotInlineReason != "no content inline (inline cap 0 bytes); stored in the object store" {
				t.Errorf("object %+v, reason %q; want a reference to the content", f.Object, f.NotInlineReason)
			}
		})
	}
}
