package config

import "time"

// minInlineMaxBytes is the smallest inline cap other than 0: below it a preview would hold almost nothing.
const minInlineMaxBytes = 1024

// maxDuplicateWindow is the shortest MaxAge of a stream that lr-relay provisions with LR_RESULT_DUPLICATE_WINDOW
// (the results stream keeps 30 days); JetStream refuses a duplicate window longer than the stream's MaxAge.
const maxDuplicateWindow = 30 * 24 * time.Hour

// validateResults checks what shapes a result (inline cap, preview, raw bytes, GetFile caps) and where large
// results and their events are kept (Object Store bucket, results stream). These are the settings whose
// defaults the packages used to fill in themselves (transcript, getfile, artifact, relay's provisioning):
// the packages now use them as given, so each is checked here.
//
// LR_INLINE_MAX_BYTES=0 means no content inline at all (script outputs and GetFile contents go to the Object
// Store; the event keeps sizes, digests and the object reference). A preview is part of the content, so
// LR_PREVIEW_BYTES must then be 0 too: it is refused rather than silently ignored.
func (c Config) validateResults(bad func(name, format string, args ...any)) {
	if c.InlineMaxBytes != 0 && c.InlineMaxBytes < minInlineMaxBytes {
		bad("INLINE_MAX_BYTES", "must be 0 (no content inline) or at least %d, got %d", minInlineMaxBytes, c.InlineMaxBytes)
	}
	switch {
	case c.InlineMaxBytes == 0 && c.PreviewBytes != 0:
		bad("PREVIEW_BYTES", "must be 0 when LR_INLINE_MAX_BYTES is 0 (no content inline, so no preview either), got %d", c.PreviewBytes)
	case c.PreviewBytes < 0 || c.InlineMaxBytes > 0 && 2*c.PreviewBytes > c.InlineMaxBytes:
		bad("PREVIEW_BYTES", "must be between 0 and half of LR_INLINE_MAX_BYTES (%d), got %d", max(c.InlineMaxBytes, 0)/2, c.PreviewBytes)
	}
	if c.RawMaxBytes < 0 || c.RawMaxBytes > 256<<10 {
		bad("RAW_MAX_BYTES", "must be between 0 and 262144, got %d", c.RawMaxBytes)
	}
	if c.GetFileMaxBytes <= 0 {
		bad("GETFILE_MAX_BYTES", "must be positive, got %d", c.GetFileMaxBytes)
	}
	if c.GetFileMaxRatio < 2 {
		bad("GETFILE_MAX_RATIO", "must be at least 2, got %g", c.GetFileMaxRatio)
	}
	if c.ObjectTTL < 0 {
		bad("OBJECT_TTL", "must not be negative (0 keeps objects), got %s", c.ObjectTTL)
	}
	if c.ObjectMaxBytes == 0 || c.ObjectMaxBytes < -1 {
		bad("OBJECT_MAX_BYTES", "must be -1 (no cap) or positive, got %d", c.ObjectMaxBytes)
	}
	if c.ResultDuplicates <= 0 || c.ResultDuplicates > maxDuplicateWindow {
		bad("RESULT_DUPLICATE_WINDOW", "must be positive and at most %s (the results stream's age limit), got %s",
			maxDuplicateWindow, c.ResultDuplicates)
	}
}
