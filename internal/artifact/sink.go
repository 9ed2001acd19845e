// Package artifact stores large result content (whole script outputs, GetFile files) outside the result
// event, in the JetStream Object Store, and hands back a claim-check reference.
package artifact

import (
	"io"

	"github.com/lr-relay/lr-relay/internal/result"
)

// Sink receives content as a stream. Exactly one of Commit or Abort must be called. Commit makes the
// content visible under its name and returns its reference; Abort removes whatever was written, so nothing
// torn stays behind.
type Sink interface {
	io.Writer
	Commit() (*result.ObjectRef, error)
	Abort() error
}

// Opener opens a sink for one piece of content. Parsers call it only once content turns out to be larger
// than what goes inline; a nil Opener means "no store configured": content beyond the inline cap is then
// summarised (size, digest, preview) but not kept.
type Opener func() (Sink, error)

// Annotator is implemented by sinks that can store metadata learned only while the content streamed (for a
// GetFile, its compressed size). A parser calls Annotate before Commit when its sink implements it; the
// values become part of the committed object atomically, so a reader of the object never sees it without
// them.
type Annotator interface {
	Annotate(meta map[string]string)
}
