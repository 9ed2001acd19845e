package deadletters

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// WriteList prints one line per entry: sequence, deadLetteredAt, reason, tenant/action/index, message.
func WriteList(w io.Writer, entries []Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tDEAD-LETTERED\tREASON\tTENANT/ACTION/INDEX\tMESSAGE")
	for _, e := range entries {
		if e.Err != nil {
			fmt.Fprintf(tw, "%d\t-\t-\t-\t%s\n", e.Seq, shorten(e.Err.Error(), 100))
			continue
		}
		r := e.Record
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, r.DeadLetteredAt.UTC().Format(time.RFC3339), orDash(r.Reason),
			where(r), shorten(r.Message, 100))
	}
	return tw.Flush()
}

func where(r Record) string {
	tenant := r.Tenant
	if tenant == "" {
		tenant = r.TenantID
	}
	index := "-"
	if r.Index != nil {
		index = fmt.Sprint(*r.Index)
	}
	return orDash(tenant) + "/" + orDash(r.ActionID) + "/" + index
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shorten makes s one line of at most n runes.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// WriteShow prints the record as indented JSON, then its payload: indented when it is JSON, as text when it
// is UTF-8, as a hex dump otherwise. payloadErr, when set, is printed instead of the payload.
func WriteShow(w io.Writer, e Entry, payload []byte, payloadErr error) error {
	var rec bytes.Buffer
	if err := json.Indent(&rec, e.Raw, "", "  "); err != nil {
		rec.Reset()
		rec.Write(e.Raw)
	}
	fmt.Fprintf(w, "record %d:\n%s\n\n", e.Seq, rec.String())
	if payloadErr != nil {
		_, err := fmt.Fprintf(w, "payload: unavailable: %v\n", payloadErr)
		return err
	}
	from := "inline"
	if o := e.Record.PayloadObject; o != nil {
		from = "object " + o.Bucket + "/" + o.Name + ", SHA-256 checked"
	}
	fmt.Fprintf(w, "payload (%d bytes, %s):\n", len(payload), from)
	var pretty bytes.Buffer
	switch {
	case json.Valid(payload) && json.Indent(&pretty, payload, "", "  ") == nil:
		pretty.WriteByte('\n')
		_, err := w.Write(pretty.Bytes())
		return err
	case utf8.Valid(payload):
		_, err := fmt.Fprintf(w, "%s\n", payload)
		return err
	default:
		_, err := io.WriteString(w, hex.Dump(payload))
		return err
	}
}
