package schemas

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// sameAsStandard checks that fastDecode either declines doc or gives exactly what jsonschema.UnmarshalJSON
// gives, and that it never accepts a document the standard decoder rejects.
func sameAsStandard(t *testing.T, doc []byte) (fast bool) {
	t.Helper()
	got, ok := fastDecode(doc)
	want, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("fastDecode accepted %q, which the standard decoder rejects: %v", truncateForTest(doc), err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fastDecode(%q) = %#v, want %#v", truncateForTest(doc), got, want)
	}
	return true
}

func truncateForTest(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

var decodeCases = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5`, `-12.5e+3`, `1E9`, `1e-2`, `123456789012345678901234567890`, `true`,
	`false`, `null`, ` {"a" : [1, 2, {"b": null}], "c": "d"} `, `{"a":1,"a":2}`, `"\u00e9\n\t\"\\\/\b\f\r"`,
	`"\u0000"`, `"é ü 日本 🎉"`, `{"k\u00e9y":"v"}`, `[[[[[[[]]]]]]]`, `"\ud83c\udf89"`, `"\ud83c"`, `"\udf89x"`,
	// Not JSON, or not only JSON: the standard decoder must be the one to say so.
	``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `01`, `-`, `1.`, `.5`, `1e`, `+1`, `tru`, `nul`,
	`truex`, `"abc`, "\"a\x01b\"", `"\x"`, `"\u12"`, `"\u12g4"`, `{} {}`, `[1] x`, "\"\xff\"", `NaN`, `[1 2]`,
	`{"a":1 "b":2}`, `"\'"`,
}

func TestFastDecodeMatchesStandard(t *testing.T) {
	fast := 0
	for _, c := range decodeCases {
		if sameAsStandard(t, []byte(c)) {
			fast++
		}
	}
	deep := strings.Repeat("[", maxFastDepth+1) + strings.Repeat("]", maxFastDepth+1)
	if sameAsStandard(t, []byte(deep)) {
		t.Errorf("fastDecode took a document nested %d deep, over maxFastDepth", maxFastDepth+1)
	}
	// Every document of the test corpus.
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if sameAsStandard(t, b) {
			fast++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fast < 20 {
		t.Errorf("fastDecode took only %d documents: the fast path is not exercised", fast)
	}
}

// TestFastDecodeTakesPublishedResults checks that a result as the relay encodes it (escapes, control
// characters, non-ASCII, a nested outputJson) takes the fast path, so the saving is real.
func TestFastDecodeTakesPublishedResults(t *testing.T) {
	ev := map[string]any{"schemaVersion": 2, "output": "line 1\r\nä \x01 <tag> & \"quoted\" \\ \t 🎉",
		"outputJson": map[string]any{"n": 1.25, "list": []any{1, "two", nil, true}}}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		t.Fatal(err)
	}
	if !sameAsStandard(t, buf.Bytes()) {
		t.Fatalf("fastDecode declined an encoded result: %s", buf.Bytes())
	}
}

func FuzzFastDecode(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, doc []byte) { sameAsStandard(t, doc) })
}
