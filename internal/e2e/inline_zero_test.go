package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/schemas"
)

// TestInlineZero relays a small RunScript and a small GetFile with LR_INLINE_MAX_BYTES=0: both results carry
// an object reference whose content (read back from the Object Store) matches, sizes and digests, and no
// content inline at all, not even a preview or the script errors.
func TestInlineZero(t *testing.T) {
	const (
		output    = "OUTPUT-MARKER-7f3a: 3 services stopped\r\n"
		errorsTxt = "ERRORS-MARKER-9c1e: access denied"
	)
	fileContent := []byte("FILE-MARKER-52d4: a small collected file\n")
	doc, err := json.Marshal(map[string]any{"script_name": "small.ps1", "exit_code": 0,
		"script_output": output, "script_errors": errorsTxt})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, simulator.Config{})
	script, file := bigActions(1, 1)
	script.Results = map[int]simulator.Content{0: {Data: doc}}
	file.Results = map[int]simulator.Content{0: {Data: fileContent, FileName: "notes.txt"}}
	e.sim.AddAction(script)
	e.sim.AddAction(file)
	cfg := e.config(t, map[string]string{"LR_INLINE_MAX_BYTES": "0", "LR_PREVIEW_BYTES": "0"})
	e.startRelay(t, cfg)
	e.publishActions(t, cfg, []simulator.Action{script, file})
	waitFor(t, 60*time.Second, "2 results", func() bool { return e.streamMsgs(t, cfg.ResultStream) >= 2 })

	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range e.readAll(t, cfg.ResultStream) {
		if err := v.ValidateResult(m.Data); err != nil {
			t.Errorf("result does not validate: %v\n%s", err, m.Data)
		}
		for _, marker := range []string{"OUTPUT-MARKER", "ERRORS-MARKER", "FILE-MARKER"} {
			if bytes.Contains(m.Data, []byte(marker)) {
				t.Errorf("result holds content inline (%s):\n%s", marker, m.Data)
			}
		}
	}
	store := e.store(t, cfg.ObjectBucket)
	// stored reads an object back whole and checks the reference against it.
	stored := func(t *testing.T, ref *result.ObjectRef) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rc, err := store.Get(ctx, ref.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if ref.Bucket != cfg.ObjectBucket || ref.Size != int64(len(b)) || ref.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("reference %+v, stored %d bytes with sha256 %x in %s", ref, len(b), sum, cfg.ObjectBucket)
		}
		return b
	}

	t.Run("script output", func(t *testing.T) {
		ev := e.resultOf(t, cfg.ResultStream, script.MachineAction.ID)
		s := ev.Script
		if ev.Outcome != result.OutcomeRelayed || s == nil || s.OutputObject == nil {
			t.Fatalf("outcome %q, script %+v; want relayed with an output object", ev.Outcome, s)
		}
		if s.Output != "" || s.OutputJSON != nil || s.Errors != "" || !s.OutputTruncated {
			t.Errorf("output %q, outputJson %v, errors %q, truncated %v; want no content inline", s.Output, s.OutputJSON, s.Errors, s.OutputTruncated)
		}
		if s.OutputBytes != int64(len(output)) || !s.ErrorsTruncated || s.ErrorsBytes != int64(len(errorsTxt)) {
			t.Errorf("outputBytes %d, errors truncated %v (%d bytes); want %d, true (%d bytes)",
				s.OutputBytes, s.ErrorsTruncated, s.ErrorsBytes, len(output), len(errorsTxt))
		}
		if s.ScriptName != "small.ps1" || s.ExitCode == nil || *s.ExitCode != 0 {
			t.Errorf("script name %q, exit code %v; want small.ps1, 0", s.ScriptName, s.ExitCode)
		}
		if got := stored(t, s.OutputObject); string(got) != output {
			t.Errorf("stored output %q, want %q", got, output)
		}
	})
	t.Run("getfile", func(t *testing.T) {
		ev := e.resultOf(t, cfg.ResultStream, file.MachineAction.ID)
		f := ev.File
		if ev.Outcome != result.OutcomeRelayed || f == nil || f.Object == nil {
			t.Fatalf("outcome %q, file %+v; want relayed with an object", ev.Outcome, f)
		}
		sum := sha256.Sum256(fileContent)
		if f.Inline || f.ContentBase64 != "" || f.Bytes != int64(len(fileContent)) || f.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("inline %v, content %q, %d bytes, sha256 %s; want no content, %d bytes, %x",
				f.Inline, f.ContentBase64, f.Bytes, f.SHA256, len(fileContent), sum)
		}
		if f.Name != "notes.txt" {
			t.Errorf("name %q, want notes.txt", f.Name)
		}
		if got := stored(t, f.Object); !bytes.Equal(got, fileContent) {
			t.Errorf("stored file %q, want %q", got, fileContent)
		}
	})
}
