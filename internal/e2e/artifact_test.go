package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/tenant"
)

func digestOf(t *testing.T, r io.Reader) (string, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// bigActions returns one RunScript and one GetFile action whose content is generated while it streams.
func bigActions(scriptSize, fileSize int64) (script, file simulator.Action) {
	script = simulator.GenerateActions(1, 1, 10, 21)[0]
	script.Results = map[int]simulator.Content{0: {Size: scriptSize, Seed: 5}}
	file = simulator.GenerateActions(1, 1, 10, 22)[0]
	file.MachineAction.Commands[0].Command = action.CommandSpec{Type: action.TypeGetFile,
		Params: []action.Param{{Key: "Path", Value: `C:\Windows\Temp\memory.dmp`}}}
	file.Results = map[int]simulator.Content{0: {Size: fileSize, Seed: 6, FileName: "memory.dmp"}}
	return script, file
}

func (e *env) store(t *testing.T, bucket string) *artifact.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := artifact.NewStore(ctx, e.js, artifact.StoreConfig{Bucket: bucket}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) resultOf(t *testing.T, stream, actionID string) *result.Event {
	t.Helper()
	for _, m := range e.readAll(t, stream) {
		var ev result.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.ActionID == actionID {
			return &ev
		}
	}
	t.Fatalf("no result for action %s", actionID)
	return nil
}

// TestLargeResultsGoToTheObjectStore relays a script output and a GetFile larger than the inline cap and
// reads both artifacts back from the Object Store, byte for byte, against the simulator's content.
func TestLargeResultsGoToTheObjectStore(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	script, file := bigActions(3<<20, 5<<20)
	e.sim.AddAction(script)
	e.sim.AddAction(file)
	cfg := e.config(t, nil)
	e.startRelay(t, cfg)
	e.publishActions(t, cfg, []simulator.Action{script, file})
	waitFor(t, 60*time.Second, "2 results", func() bool { return e.streamMsgs(t, cfg.ResultStream) >= 2 })
	store := e.store(t, cfg.ObjectBucket)
	ctx := context.Background()

	t.Run("script output", func(t *testing.T) {
		ev := e.resultOf(t, cfg.ResultStream, script.MachineAction.ID)
		s := ev.Script
		if s == nil || !s.OutputTruncated || s.OutputObject == nil {
			t.Fatalf("want a truncated script output with an object reference, got %+v", s)
		}
		if !strings.Contains(s.Output, "bytes omitted") || len(s.Output) > 3*cfg.PreviewBytes {
			t.Errorf("preview is %d bytes and lacks the omission marker", len(s.Output))
		}
		wantSum, wantSize := digestOf(t, simulator.GeneratedReader(3<<20, 5))
		rc, err := store.Get(ctx, s.OutputObject.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		gotSum, gotSize := digestOf(t, rc)
		if gotSum != wantSum || gotSize != wantSize || s.OutputObject.SHA256 != wantSum || s.OutputBytes != wantSize {
			t.Errorf("stored output: sha256 %s (%d bytes), event says %s (%d bytes); want %s (%d bytes)",
				gotSum, gotSize, s.OutputObject.SHA256, s.OutputBytes, wantSum, wantSize)
		}
		if head, _ := io.ReadAll(io.LimitReader(simulator.GeneratedReader(3<<20, 5), 64)); !strings.HasPrefix(s.Output, string(head)) {
			t.Errorf("preview does not start with the output's first bytes")
		}
	})
	t.Run("getfile", func(t *testing.T) {
		ev := e.resultOf(t, cfg.ResultStream, file.MachineAction.ID)
		f := ev.File
		if f == nil || f.Inline || f.Object == nil {
			t.Fatalf("want a file stored in the object store, got %+v", f)
		}
		wantSum, wantSize := digestOf(t, simulator.GeneratedReader(5<<20, 6))
		rc, err := store.Get(ctx, f.Object.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		gotSum, gotSize := digestOf(t, rc)
		if gotSum != wantSum || f.SHA256 != wantSum || f.Bytes != wantSize || gotSize != wantSize {
			t.Errorf("stored file: sha256 %s (%d bytes), event %s (%d bytes); want %s (%d bytes)", gotSum, gotSize, f.SHA256, f.Bytes, wantSum, wantSize)
		}
		if f.Name != "memory.dmp" || f.CompressedBytes <= 0 || f.CompressedBytes >= f.Bytes {
			t.Errorf("name %q, compressed %d of %d bytes: want memory.dmp and a real compressed size", f.Name, f.CompressedBytes, f.Bytes)
		}
	})
}

// TestRedeliveryMidUpload kills a relay process while it streams a GetFile into the Object Store, lets another
// process take the redelivered event over, and checks that there is exactly one complete object with the right
// digest, one result, and that the torn upload's chunks are cleaned up.
func TestRedeliveryMidUpload(t *testing.T) {
	faults, err := simulator.ParseFaults("slowdrip=1,slowdrip_delay=50ms,slowdrip_chunk=32768")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, simulator.Config{Faults: faults})
	const size = 24 << 20
	_, file := bigActions(1, size)
	e.sim.AddAction(file)
	vars := map[string]string{"LR_ACK_WAIT": "2s", "LR_WORKERS": "1"}
	cfg := e.config(t, vars)
	a := e.startProc(t, "a", vars)
	e.publishActions(t, cfg, []simulator.Action{file})

	objStream := "OBJ_" + cfg.ObjectBucket
	waitFor(t, 60*time.Second, "the first chunks of the upload", func() bool { return e.streamMsgs(t, objStream) >= 2 })
	a.kill()
	if !a.wait(10 * time.Second) {
		t.Fatal("process a did not die")
	}
	if err := e.sim.SetFaults(simulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	e.startProc(t, "b", vars)
	waitFor(t, 90*time.Second, "the result", func() bool { return e.streamMsgs(t, cfg.ResultStream) >= 1 })

	if n := e.streamMsgs(t, cfg.ResultStream); n != 1 {
		t.Errorf("results stream holds %d results, want 1", n)
	}
	ctx := context.Background()
	store := e.store(t, cfg.ObjectBucket)
	name := artifact.ObjectName(tenant.DefaultName, file.MachineAction.ID, 0, artifact.KindFile)
	ref, _, ok, err := store.Lookup(ctx, name)
	if err != nil || !ok {
		t.Fatalf("object %s: ok=%v err=%v", name, ok, err)
	}
	wantSum, _ := digestOf(t, simulator.GeneratedReader(size, 6))
	if ref.SHA256 != wantSum || ref.Size != size {
		t.Errorf("object %s: sha256 %s, %d bytes; want %s, %d", name, ref.SHA256, ref.Size, wantSum, size)
	}
	ev := e.resultOf(t, cfg.ResultStream, file.MachineAction.ID)
	if ev.File == nil || ev.File.Object == nil || ev.File.Object.SHA256 != wantSum {
		t.Errorf("result does not reference the complete object: %+v", ev.File)
	}

	// The killed process left chunks that no object references; the janitor removes exactly those.
	removed, err := store.CleanOrphans(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if removed < 1 {
		t.Errorf("CleanOrphans removed %d uploads, want the torn one", removed)
	}
	s, err := e.js.Stream(ctx, objStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("$O."+cfg.ObjectBucket+".C.>"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 1 {
		t.Errorf("chunk subjects after cleanup: %d, want 1 (the complete object's)", len(info.State.Subjects))
	}
	assertNoSecrets(t, e.logs.String(), simulator.DefaultClientSecret)
}

// TestCompleteObjectIsReused stands for a crash between storing an object and publishing its result: a second
// relay, publishing to a fresh results stream (so nothing is found there), gets the same events again and must
// rebuild both results from the stored objects, without calling the API or downloading anything, and with the
// same content as the first time.
func TestCompleteObjectIsReused(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	script, file := bigActions(2<<20, 3<<20)
	e.sim.AddAction(script)
	e.sim.AddAction(file)
	cfg := e.config(t, nil)
	stop := e.startRelay(t, cfg)
	actions := []simulator.Action{script, file}
	e.publishActions(t, cfg, actions)
	waitFor(t, 60*time.Second, "2 results", func() bool { return e.streamMsgs(t, cfg.ResultStream) >= 2 })
	firstScript := e.resultOf(t, cfg.ResultStream, script.MachineAction.ID)
	firstFile := e.resultOf(t, cfg.ResultStream, file.MachineAction.ID)
	stop()
	before := e.sim.Stats()

	cfg2 := e.config(t, map[string]string{"LR_RESULT_STREAM": "RESULTS_AFTER_CRASH", "LR_RESULT_SUBJECT_PREFIX": "results.after"})
	e.startRelay(t, cfg2)
	e.publishActions(t, cfg2, actions)
	waitFor(t, 60*time.Second, "2 results in the second stream", func() bool { return e.streamMsgs(t, cfg2.ResultStream) >= 2 })

	after := e.sim.Stats()
	if after.LinkCalls != before.LinkCalls || after.BlobDownloads != before.BlobDownloads {
		t.Errorf("reuse called the API or downloaded: link calls %d -> %d, downloads %d -> %d",
			before.LinkCalls, after.LinkCalls, before.BlobDownloads, after.BlobDownloads)
	}
	againScript := e.resultOf(t, cfg2.ResultStream, script.MachineAction.ID)
	againFile := e.resultOf(t, cfg2.ResultStream, file.MachineAction.ID)
	if againScript.Script == nil || againScript.Script.Output != firstScript.Script.Output ||
		*againScript.Script.OutputObject != *firstScript.Script.OutputObject || againScript.Script.ScriptName != firstScript.Script.ScriptName {
		t.Errorf("reused script result differs:\nfirst %+v\nagain %+v", firstScript.Script, againScript.Script)
	}
	if againFile.File == nil || *againFile.File.Object != *firstFile.File.Object || againFile.File.Name != firstFile.File.Name ||
		againFile.File.CompressedBytes != firstFile.File.CompressedBytes {
		t.Errorf("reused file result differs:\nfirst %+v\nagain %+v", firstFile.File, againFile.File)
	}
}
