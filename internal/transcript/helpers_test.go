package transcript

import (
	"encoding/base64"
	"encoding/json"
	"io"
)

// newJSONEncoder encodes like a real producer: no HTML escaping.
func newJSONEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

func decodeBase64(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err
}

// testOptions are the limits of the default configuration (LR_INLINE_MAX_BYTES, LR_PREVIEW_BYTES,
// LR_RAW_MAX_BYTES): Parse has no defaults of its own, so every test says what it parses with.
func testOptions() Options {
	return Options{InlineMax: 64 << 10, PreviewBytes: 4 << 10, RawMax: 16 << 10}
}
