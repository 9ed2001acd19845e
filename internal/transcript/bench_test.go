package transcript

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// realistic4KB is a typical Windows RunScript result: banner, a table of processes (about 4 KB of
// output with backslashes, tabs and a few non-ASCII names) and trailing NULs.
func realistic4KB() []byte {
	var out strings.Builder
	out.WriteString(BannerPrefix + `C:\ProgramData\Microsoft\Windows Defender Advanced Threat Protection\Temp\PSScriptOutputs\PSScript_Transcript_{0D5EC4F2-1B2A-4C3D-9E8F-0123456789AB}.txt` + "\r\n")
	banner := out.Len()
	out.WriteString("Handles  NPM(K)    PM(K)      WS(K)     CPU(s)     Id  SI ProcessName\r\n")
	for i := 0; out.Len()-banner < 4<<10; i++ {
		fmt.Fprintf(&out, "%7d %7d %8d %10d %10.2f %6d %3d C:\\Program Files\\Vendör\\app%02d.exe\t€\r\n", 100+i, 10+i, 2000*i, 5000*i, float64(i)/3, 1000+i, 1, i)
	}
	out.WriteString("\x00\x00\x00")
	var b bytes.Buffer
	b.WriteString(`{"script_name":"Get-Processes.ps1","exit_code":0,"script_output":`)
	b.WriteString(jsonString(out.String()))
	b.WriteString(`,"script_errors":""}`)
	return b.Bytes()
}

func BenchmarkParse4KB(b *testing.B) {
	in := realistic4KB()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		s, prob, err := Parse(bytes.NewReader(in), testOptions())
		if err != nil || prob != nil || s.TranscriptPath == "" || s.OutputBytes < 4<<10 {
			b.Fatalf("Parse: %+v %v %v", s, prob, err)
		}
	}
}
