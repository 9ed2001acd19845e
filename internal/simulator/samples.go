package simulator

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/lr-relay/lr-relay/internal/action"
)

// NewGUID returns a version 4 GUID drawn from rng, in lowercase canonical form, so that generated data
// is reproducible for a seed.
func NewGUID(rng *rand.Rand) string {
	var b [16]byte
	for i := range 2 {
		v := rng.Uint64()
		for j := range 8 {
			b[i*8+j] = byte(v >> (8 * j))
		}
	}
	return formatGUID(b)
}

func formatGUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// TranscriptJSON builds a RunScript result document with the real key names, the transcript banner in
// front of output, and script_errors null when scriptErrors is nil. HTML characters are not escaped, as
// the sensor does not escape them.
func TranscriptJSON(scriptName string, exitCode int, bannerGUID, output string, scriptErrors *string) []byte {
	doc := struct {
		ScriptName   string  `json:"script_name"`
		ExitCode     int     `json:"exit_code"`
		ScriptOutput string  `json:"script_output"`
		ScriptErrors *string `json:"script_errors"`
	}{scriptName, exitCode, TranscriptBanner(bannerGUID) + "\n" + output, scriptErrors}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(doc)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// jsonString returns s as a JSON string literal, without HTML escaping.
func jsonString(s string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return "", fmt.Errorf("encode string: %w", err)
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

// builder makes realistic actions from a seeded RNG.
type builder struct {
	rng    *rand.Rand
	tenant string
	n      int
}

func (b *builder) stamp(offset time.Duration) string {
	// A fixed epoch keeps the demo reproducible.
	epoch := time.Date(2024, 5, 14, 9, 0, 0, 0, time.UTC)
	return epoch.Add(time.Duration(b.n)*7*time.Minute + offset).Format("2006-01-02T15:04:05.0000000Z")
}

func (b *builder) machineID() string {
	var v [20]byte
	for i := range v {
		v[i] = byte(b.rng.Uint32())
	}
	return hex.EncodeToString(v[:])
}

// action builds a finished live response action with commands numbered in order.
func (b *builder) action(status, host, comment string, cmds ...action.Command) action.MachineAction {
	b.n++
	for i := range cmds {
		cmds[i].Index = i
		if cmds[i].CommandStatus != action.StatusCreated {
			cmds[i].StartTime = b.stamp(time.Duration(10+20*i) * time.Second)
			cmds[i].EndTime = b.stamp(time.Duration(25+20*i) * time.Second)
		}
	}
	return action.MachineAction{
		ID:                    NewGUID(b.rng),
		TenantID:              b.tenant,
		Type:                  "LiveResponse",
		Status:                status,
		MachineID:             b.machineID(),
		ComputerDNSName:       host,
		Requestor:             "analyst@contoso.com",
		RequestorComment:      comment,
		CreationDateTimeUTC:   b.stamp(0),
		LastUpdateDateTimeUTC: b.stamp(time.Duration(30+20*len(cmds)) * time.Second),
		Commands:              cmds,
	}
}

func runScript(status, script, args string, errs ...string) action.Command {
	params := []action.Param{{Key: "ScriptName", Value: script}}
	if args != "" {
		params = append(params, action.Param{Key: "Args", Value: args})
	}
	return action.Command{CommandStatus: status, Errors: errs, Command: action.CommandSpec{Type: action.TypeRunScript, Params: params}}
}

func getFile(status, path string) action.Command {
	return action.Command{CommandStatus: status, Command: action.CommandSpec{Type: action.TypeGetFile, Params: []action.Param{{Key: "Path", Value: path}}}}
}

func putFile(status, name string) action.Command {
	return action.Command{CommandStatus: status, Command: action.CommandSpec{Type: action.TypePutFile, Params: []action.Param{{Key: "FileName", Value: name}}}}
}

func ptr(s string) *string { return &s }

// SampleActions returns the demo set: one action per case the relay must handle, with realistic commands
// and results. It is deterministic (fixed ids and timestamps) and every action carries tenantID.
//
// In order: the documentation's minidump example (banner and trailing NULs); a script printing JSON
// (script_errors null); a script printing CSV; output with invalid UTF-8; a result with the old key names
// (name, script_error); a GetFile of a small text file; a Failed command; a PutFile alone; a command still
// Created in an action that timed out; PutFile, RunScript and GetFile in one action; exit code 323 (library
// script hash mismatch); the documentation's example with a raw line break inside a string (not valid
// JSON); and a Cancelled action holding a Completed command.
func SampleActions(tenantID string) []Action {
	b := &builder{rng: rand.New(rand.NewPCG(20240514, 1)), tenant: tenantID}
	var out []Action
	add := func(ma action.MachineAction, results map[int]Content) {
		out = append(out, Action{MachineAction: ma, Results: results})
	}
	guid := func() string { return NewGUID(b.rng) }

	add(b.action("Succeeded", "ws-finance-07.contoso.local", "Collect Office memory dump",
		runScript(action.StatusCompleted, "minidump.ps1", "OfficeClickToRun")),
		map[int]Content{0: {Data: TranscriptJSON("minidump.ps1", 0, guid(),
			"C:\\windows\\TEMP\\OfficeClickToRun.dmp.zip\n51 MB\n\x00\x00\x00", ptr(""))}})

	add(b.action("Succeeded", "srv-web-02.contoso.local", "Running processes",
		runScript(action.StatusCompleted, "Get-ProcessList.ps1", "-AsJson")),
		map[int]Content{0: {Data: TranscriptJSON("Get-ProcessList.ps1", 0, guid(),
			`{"processes":[{"name":"svchost.exe","pid":1024,"user":"NT AUTHORITY\\SYSTEM"},{"name":"lsass.exe","pid":688,"user":"NT AUTHORITY\\SYSTEM"},{"name":"powershell.exe","pid":5120,"user":"CONTOSO\\jdoe","cmdline":"powershell -enc SQBFAFgA"}]}`+"\n", nil)}})

	add(b.action("Succeeded", "ws-hr-11.contoso.local", "Autoruns",
		runScript(action.StatusCompleted, "collect_autoruns.ps1", "")),
		map[int]Content{0: {Data: TranscriptJSON("collect_autoruns.ps1", 0, guid(),
			"Entry,Path,Signer,Enabled\r\nOneDrive,\"C:\\Users\\jdoe\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe\",Microsoft Corporation,True\r\nUpdater,C:\\ProgramData\\upd\\svc.exe,,True\r\nSecurityHealth,C:\\Windows\\System32\\SecurityHealthSystray.exe,Microsoft Windows,True\r\n", ptr(""))}})

	// json.Marshal would replace invalid UTF-8, so the raw bytes go in after encoding.
	invalid := TranscriptJSON("list_files.ps1", 0, guid(), "Directory: C:\\Users\\@@1@@\\Documents\nrapport_@@2@@.docx\n", ptr(""))
	invalid = bytes.ReplaceAll(invalid, []byte("@@1@@"), []byte("Ren\xe9"))
	invalid = bytes.ReplaceAll(invalid, []byte("@@2@@"), []byte("\xff\xfefin"))
	add(b.action("Succeeded", "ws-paris-03.contoso.local", "List documents",
		runScript(action.StatusCompleted, "list_files.ps1", `C:\Users`)),
		map[int]Content{0: {Data: invalid}})

	old, _ := jsonString(TranscriptBanner(guid()) + "\nLegacy collector finished\n3 files collected\n")
	add(b.action("Succeeded", "ws-legacy-01.contoso.local", "Legacy collector",
		runScript(action.StatusCompleted, "legacy_collect.ps1", "")),
		map[int]Content{0: {Data: []byte(`{"name":"legacy_collect.ps1","exit_code":0,"script_output":` + old + `,"script_error":null}`)}})

	add(b.action("Succeeded", "srv-dc-01.contoso.local", "Get hosts file",
		getFile(action.StatusCompleted, `C:\Windows\System32\drivers\etc\hosts`)),
		map[int]Content{0: {Data: []byte("# Copyright (c) 1993-2009 Microsoft Corp.\r\n#\r\n# This is a sample HOSTS file used by Microsoft TCP/IP for Windows.\r\n#\r\n127.0.0.1       localhost\r\n::1             localhost\r\n10.20.30.40     updates.contoso-cdn.example\r\n")}})

	add(b.action("Failed", "ws-sales-05.contoso.local", "Collect browser history",
		runScript(action.StatusFailed, "browser_history.ps1", "-Days 7", "An error occurred while running the script: the script timed out.")), nil)

	add(b.action("Succeeded", "ws-sales-05.contoso.local", "Upload triage tool",
		putFile(action.StatusCompleted, "triage.exe")), nil)

	add(b.action("TimeOut", "laptop-travel-22.contoso.local", "Collect event logs",
		runScript(action.StatusCreated, "export_evtx.ps1", "Security")), nil)

	add(b.action("Succeeded", "srv-sql-04.contoso.local", "Run triage tool and collect its report",
		putFile(action.StatusCompleted, "triage.exe"),
		runScript(action.StatusCompleted, "run_triage.ps1", "-Out C:\\Temp\\triage_report.txt"),
		getFile(action.StatusCompleted, `C:\Temp\triage_report.txt`)),
		map[int]Content{
			1: {Data: TranscriptJSON("run_triage.ps1", 0, guid(), "triage.exe finished in 12.4 s\nreport written to C:\\Temp\\triage_report.txt\n", ptr(""))},
			2: {Data: []byte("TRIAGE REPORT srv-sql-04\n=======================\nsuspicious services: 1\n  - UpdaterSvc (C:\\ProgramData\\upd\\svc.exe)\nscheduled tasks: 0\nopen ports: 1433, 3389\n")},
		})

	add(b.action("Succeeded", "ws-it-09.contoso.local", "Library script after update",
		runScript(action.StatusCompleted, "collect_netstat.ps1", "")),
		map[int]Content{0: {Data: TranscriptJSON("collect_netstat.ps1", 323, guid(), "",
			ptr("The script file hash does not match the library version. Upload the script to the library again."))}})

	add(b.action("Succeeded", "ws-finance-07.contoso.local", "Published example (raw line break)",
		runScript(action.StatusCompleted, "minidump.ps1", "OfficeClickToRun")),
		map[int]Content{0: {Data: []byte("{\"script_name\": \"minidump.ps1\",\n \"exit_code\": 0,\n \"script_output\": \"" +
			`Transcript started, output file is C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Temp\\PSScriptOutputs\\PSScript_Transcript_{` + upperGUID(guid()) + `}.txt` +
			"\nC:\\\\windows\\\\TEMP\\\\OfficeClickToRun.dmp.zip\n51 MB\",\n \"script_errors\": \"\"}")}})

	add(b.action("Cancelled", "ws-eng-14.contoso.local", "Cancelled after first command",
		runScript(action.StatusCompleted, "whoami.ps1", ""),
		getFile(action.StatusCreated, `C:\Users\Public\notes.txt`)),
		map[int]Content{0: {Data: TranscriptJSON("whoami.ps1", 0, guid(), "contoso\\eng14\n", ptr(""))}})

	return out
}

func upperGUID(g string) string {
	return string(bytes.ToUpper([]byte(g)))
}

// GenerateActions returns n finished actions of commandsPerAction completed RunScript commands each, for
// load tests. Their results are generated while they stream (Content.Data is nil), so memory does not grow
// with outputBytes: each is a transcript document whose script_output is the banner line followed by
// GeneratedReader(outputBytes, seed of that result). The actions carry no tenant, so every tenant sees them.
func GenerateActions(n, commandsPerAction, outputBytes int, seed int64) []Action {
	b := &builder{rng: rand.New(rand.NewPCG(uint64(seed), 2))}
	out := make([]Action, 0, max(n, 0))
	for i := range max(n, 0) {
		cmds := make([]action.Command, max(commandsPerAction, 0))
		results := make(map[int]Content, len(cmds))
		for j := range cmds {
			cmds[j] = runScript(action.StatusCompleted, fmt.Sprintf("load_%d.ps1", j), fmt.Sprintf("-Batch %d", i))
			results[j] = Content{Size: int64(max(outputBytes, 0)), Seed: int64(b.rng.Uint64())}
		}
		out = append(out, Action{
			MachineAction: b.action("Succeeded", fmt.Sprintf("load-%05d.contoso.local", i), "load test", cmds...),
			Results:       results,
		})
	}
	return out
}

// Sizes of the large samples: over the default inline cap (64 KiB), so they take the Object Store path.
const (
	LargeScriptOutputBytes = 200 << 10
	LargeGetFileBytes      = 4 << 20
)

// LargeSampleActions returns one action whose results are too large to go inline: a RunScript output of
// LargeScriptOutputBytes and a GetFile of LargeGetFileBytes (a memory dump). Their content is generated while
// it streams (GeneratedReader with the seeds in Results), so nothing large is committed or held in memory.
// It is deterministic, like SampleActions.
func LargeSampleActions(tenantID string) []Action {
	b := &builder{rng: rand.New(rand.NewPCG(20240514, 3)), tenant: tenantID}
	ma := b.action("Succeeded", "ws-finance-07.contoso.local", "Full process inventory and memory dump",
		runScript(action.StatusCompleted, "Get-FullInventory.ps1", "-AllProperties"),
		getFile(action.StatusCompleted, `C:\Windows\TEMP\OfficeClickToRun.dmp`))
	return []Action{{MachineAction: ma, Results: map[int]Content{
		0: {Size: LargeScriptOutputBytes, Seed: 101},
		1: {Size: LargeGetFileBytes, Seed: 102},
	}}}
}
