package transcript

import "fmt"

// Preview returns s whole when it is at most 2*n bytes, else its first and last n bytes (cut on UTF-8
// boundaries) joined by a line saying how many bytes were left out. It is the same shape as the preview of
// a large script output, for other text that must be shortened to fit an event.
func Preview(s string, n int) string {
	if len(s) <= 2*n {
		return s
	}
	head := cutHead([]byte(s[:n]))
	tail := cutTail([]byte(s[len(s)-n:]))
	omitted := len(s) - len(head) - len(tail)
	return string(head) + fmt.Sprintf("\n…[%d bytes omitted]…\n", omitted) + string(tail)
}
