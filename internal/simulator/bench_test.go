package simulator

import (
	"compress/gzip"
	"io"
	"net/http"
	"testing"
)

// BenchmarkGetFileStream measures the simulator's throughput for a generated GetFile of 64 MiB, gzip on
// the fly, over a real HTTP connection, with the client gunzipping.
func BenchmarkGetFileStream(b *testing.B) {
	const size = 64 << 20
	e := newEnv(b, Config{})
	a := simpleAction(testID, nil, nil)
	a.Results = map[int]Content{1: {Size: size, Seed: 1}}
	e.sim.AddAction(a)
	tok := e.token()
	b.SetBytes(size)
	for b.Loop() {
		resp, err := e.do(e.link(testID, 1, tok), "")
		if err != nil {
			b.Fatal(err)
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, zr); err != nil || n != size {
			b.Fatalf("read %d, %v", n, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatal(resp.Status)
		}
	}
}

// BenchmarkGeneratedReader measures the content generator alone.
func BenchmarkGeneratedReader(b *testing.B) {
	const size = 64 << 20
	b.SetBytes(size)
	for b.Loop() {
		_, _ = io.Copy(io.Discard, GeneratedReader(size, 1))
	}
}
