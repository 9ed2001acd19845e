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
