package download

import (
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameBytes caps a file name; longer names are refused rather than cut, since a cut name may lose its
// extension (.gz) and mislead whoever reads it.
const maxNameBytes = 255

// fileName extracts the file name from a Content-Disposition header value sent by an untrusted server.
// It returns the base name only (anything up to the last '/' or '\' is dropped, so a Windows path from the
// sensor still yields its file name), or "" when the header is missing or malformed, or the name is empty,
// "." or "..", too long, not valid UTF-8, or holds control, format (bidi override) or ':' characters
// (':' names a drive or an NTFS alternate data stream).
func fileName(header string) string {
	if header == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(header)
	if err != nil {
		return ""
	}
	// mime.ParseMediaType decodes RFC 2231 filename* into "filename" and prefers it.
	name := params["filename"]
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSpace(name)
	if name == "" || name == "." || name == ".." || len(name) > maxNameBytes || !utf8.ValidString(name) {
		return ""
	}
	for _, r := range name {
		if r == ':' || r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return ""
		}
	}
	return name
}
