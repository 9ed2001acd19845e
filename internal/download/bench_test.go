package download

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkRead measures streaming throughput through the guarded reader (cap, idle timer) over a
// loopback connection, 64 MiB per iteration.
func BenchmarkRead(b *testing.B) {
	const size = 64 << 20
	chunk := make([]byte, 1<<20)
	srv := newServer(b, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	d, err := New(Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()},
		Now: func() time.Time { return fixedNow }}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer d.CloseIdleConnections()
	buf := make([]byte, 32<<10)
	b.SetBytes(size)
	for b.Loop() {
		body, err := d.Open(b.Context(), blobLink(srv.URL))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, body, buf)
		body.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes, err %v", n, err)
		}
	}
}
