package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"memory.dmp":                      "memory.dmp",
		"../../etc/passwd":                "passwd",
		`C:\Windows\evil.exe`:             "evil.exe",
		"..":                              "unnamed",
		"/":                               "unnamed",
		".bashrc":                         "bashrc",
		"a b/c:d*e?.txt":                  "c_d_e_.txt",
		"rapport_\xe9t\xe9.doc":           "rapport__t_.doc",
		strings.Repeat("x", 300) + ".log": strings.Repeat("x", 96) + ".log",
	} {
		if got := SafeName(in); got != want {
			t.Errorf("SafeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFetchOutputWritesEveryContent fetches an action with a script output and a GetFile over the inline cap
// (they stream to disk), small inline ones, and a file whose name tries to leave the directory.
func TestFetchOutputWritesEveryContent(t *testing.T) {
	sim, err := simulator.New(simulator.Config{Log: zerolog.Nop(), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = sim.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := ln.Addr().String()

	const id = "0f1e2d3c-4b5a-4697-8877-665544332211"
	script := func(name string) action.Command {
		return action.Command{CommandStatus: action.StatusCompleted, Command: action.CommandSpec{Type: action.TypeRunScript,
			Params: []action.Param{{Key: "ScriptName", Value: name}}}}
	}
	getFile := func(path string) action.Command {
		return action.Command{CommandStatus: action.StatusCompleted, Command: action.CommandSpec{Type: action.TypeGetFile,
			Params: []action.Param{{Key: "Path", Value: path}}}}
	}
	cmds := []action.Command{script("big.ps1"), getFile(`C:\dumps\memory.dmp`), script("small.ps1"), getFile(`C:\x\hosts`),
		getFile(`C:\x\innocent.txt`)}
	for i := range cmds {
		cmds[i].Index = i
	}
	const bigScript, bigFile = 200 << 10, 3 << 20
	hosts := []byte("127.0.0.1 localhost\n")
	sim.AddAction(simulator.Action{
		MachineAction: action.MachineAction{ID: id, Type: "LiveResponse", Status: "Succeeded", Commands: cmds},
		Results: map[int]simulator.Content{
			0: {Size: bigScript, Seed: 5},
			1: {Size: bigFile, Seed: 6},
			2: {Data: simulator.TranscriptJSON("small.ps1", 0, "0f1e2d3c-4b5a-4697-8877-665544332299", "hello\n", nil)},
			3: {Data: hosts},
			4: {Data: []byte("gotcha"), FileName: "../../../tmp/evil"},
		},
	})

	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	cfg.MDEAPIURL, cfg.MDETokenURL = "http://"+addr, "http://"+addr+"/{tenant}/oauth2/v2.0/token"
	cfg.MDEScope = "https://api.securitycenter.microsoft.com/.default"
	cfg.MDETenantID, cfg.MDEClientID, cfg.MDEClientSecret = simulator.DefaultTenantID, simulator.DefaultClientID, simulator.DefaultClientSecret
	cfg.DownloadAllowHTTP, cfg.DownloadAllowedHosts = true, []string{addr}

	dir := filepath.Join(t.TempDir(), "out")
	var out, report bytes.Buffer
	if err := Fetch(ctx, cfg, zerolog.Nop(), id, -1, &out, dir, &report); err != nil {
		t.Fatalf("fetch: %v\n%s", err, report.String())
	}
	generated := func(size, seed int64) []byte {
		b, _ := io.ReadAll(simulator.GeneratedReader(size, seed))
		return b
	}
	want := map[string][]byte{
		id + "_0_big.ps1.output.txt":   generated(bigScript, 5),
		id + "_1_memory.dmp":           generated(bigFile, 6),
		id + "_2_small.ps1.output.txt": []byte("hello\n"),
		id + "_3_hosts":                hosts,
		id + "_4_evil":                 []byte("gotcha"),
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("output directory holds %v, want exactly the %d result files", names, len(want))
	}
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s: %d bytes, want the %d expected", name, len(got), len(content))
		}
		sum := sha256.Sum256(content)
		if !strings.Contains(report.String(), name+" (") || !strings.Contains(report.String(), hex.EncodeToString(sum[:])) {
			t.Errorf("report does not name %s with its digest:\n%s", name, report.String())
		}
	}
	// The results printed name the files for the content that was not inline.
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	refs := 0
	for sc.Scan() {
		var ev result.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		for _, ref := range []*result.ObjectRef{scriptRef(ev.Script), fileRef(ev.File)} {
			if ref != nil {
				refs++
				sum := sha256.Sum256(want[ref.Name])
				if ref.Bucket != dir || ref.SHA256 != hex.EncodeToString(sum[:]) {
					t.Errorf("command %d: reference %+v does not name the file written with its digest", ev.Index, ref)
				}
			}
		}
	}
	if refs != 2 {
		t.Errorf("%d results reference a file, want the 2 large ones", refs)
	}
}

func scriptRef(s *result.Script) *result.ObjectRef {
	if s == nil {
		return nil
	}
	return s.OutputObject
}

func fileRef(f *result.File) *result.ObjectRef {
	if f == nil {
		return nil
	}
	return f.Object
}
