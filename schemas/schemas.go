// Package schemas holds the JSON Schemas that are lr-relay's contract with the systems around it, and validates
// documents against them.
//
// Three documents cross the service's boundary: the "live response finished" event it consumes
// (event.schema.json), the result event it publishes per command (result.schema.json) and the dead-letter
// record it publishes when it gives up on an event (deadletter.schema.json). The schemas are embedded so that
// the binary validates against exactly the contract it ships with.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// File names of the embedded schemas.
const (
	EventFile      = "event.schema.json"
	ResultFile     = "result.schema.json"
	DeadLetterFile = "deadletter.schema.json"
)

// Names of the schemas as ValidationError and JSONError report them.
const (
	EventSchema      = "event"
	ResultSchema     = "result"
	DeadLetterSchema = "deadletter"
)

// baseURL is only an identifier for the compiler: every schema is registered from the embedded files, so
// nothing is ever fetched from it.
const baseURL = "https://github.com/lr-relay/lr-relay/schemas/"

//go:embed *.json
var files embed.FS

// Validator validates documents against the three schemas. It is immutable once built and safe for
// concurrent use by any number of goroutines.
type Validator struct {
	event      *jsonschema.Schema
	result     *jsonschema.Schema
	deadLetter *jsonschema.Schema
}

// New compiles the embedded schemas. Format ("date-time") and content ("base64") assertions are switched
// on, because draft 2020-12 treats them as annotations by default and the published documents must really
// hold what the contract says.
func New() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	// Refuse any $ref that is not one of the embedded documents instead of reading files or URLs.
	c.UseLoader(refuseLoader{})
	for _, name := range []string{EventFile, ResultFile, DeadLetterFile} {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading embedded schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parsing embedded schema %s: %w", name, err)
		}
		if err := c.AddResource(baseURL+name, doc); err != nil {
			return nil, fmt.Errorf("adding schema %s: %w", name, err)
		}
	}
	var v Validator
	for _, s := range []struct {
		file string
		dst  **jsonschema.Schema
	}{{EventFile, &v.event}, {ResultFile, &v.result}, {DeadLetterFile, &v.deadLetter}} {
		sch, err := c.Compile(baseURL + s.file)
		if err != nil {
			return nil, fmt.Errorf("compiling schema %s: %w", s.file, err)
		}
		*s.dst = sch
	}
	return &v, nil
}

// refuseLoader makes the compiler fail on references outside the embedded set rather than touch the network
// or the file system.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not embedded in lr-relay", url)
}

// ValidateEvent checks a consumed "live response finished" event. It returns a *JSONError when doc is not
// JSON at all (dead-letter reason invalid_json) and a *ValidationError when it breaks the schema
// (schema_violation).
func (v *Validator) ValidateEvent(doc []byte) error { return validate(v.event, EventSchema, doc) }

// ValidateResult checks a result event before it is published; a failure means the code and the contract
// have drifted apart.
func (v *Validator) ValidateResult(doc []byte) error { return validate(v.result, ResultSchema, doc) }

// ValidateDeadLetter checks a dead-letter record before it is published.
func (v *Validator) ValidateDeadLetter(doc []byte) error {
	return validate(v.deadLetter, DeadLetterSchema, doc)
}

func validate(sch *jsonschema.Schema, name string, doc []byte) error {
	// UnmarshalJSON keeps numbers as json.Number, so 1.5 is not an integer and large integers stay exact.
	// fastDecode gives the same value for the plain documents the relay publishes, at a fraction of the cost.
	inst, ok := fastDecode(doc)
	if !ok {
		var err error
		if inst, err = jsonschema.UnmarshalJSON(bytes.NewReader(doc)); err != nil {
			return &JSONError{Schema: name, Err: err}
		}
	}
	if err := sch.Validate(inst); err != nil {
		return &ValidationError{Schema: name, Detail: describe(err), TooLarge: overBound(err)}
	}
	return nil
}

// JSONError reports a document that is not a single valid JSON value, so no schema could be applied.
type JSONError struct {
	// Schema is the schema the document was meant for: event, result or deadletter.
	Schema string
	// Err is the decoder's error.
	Err error
}

func (e *JSONError) Error() string { return e.Schema + ": invalid JSON: " + e.Err.Error() }

// Unwrap returns the decoder's error.
func (e *JSONError) Unwrap() error { return e.Err }

// ValidationError reports a JSON document that breaks its schema.
type ValidationError struct {
	// Schema is the schema that failed: event, result or deadletter.
	Schema string
	// Detail is one line for an operator: the JSON pointer of each failing value and why it failed, for
	// example `at /commands/0/index: must be >= 0, got -1`. It quotes at most a short prefix of any value.
	Detail string
	// TooLarge is set when a value broke one of the schema's size bounds (maxLength, maxItems,
	// maxProperties): the document is too large rather than malformed (dead-letter reason input_too_large).
	TooLarge bool
}

// overBound reports whether any failing keyword is a size bound.
func overBound(err error) bool {
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return false
	}
	switch ve.ErrorKind.(type) {
	case *kind.MaxLength, *kind.MaxItems, *kind.MaxProperties:
		return true
	}
	for _, c := range ve.Causes {
		if overBound(c) {
			return true
		}
	}
	return false
}

func (e *ValidationError) Error() string {
	return e.Schema + " does not match its schema: " + e.Detail
}

// Limits that keep Detail one short line whatever the document holds.
const (
	maxReported = 3   // leaf failures named in Detail; the rest are counted
	maxQuoted   = 40  // runes of a document value quoted in a message
	maxMessage  = 200 // runes of one failure message
)

// describe flattens the library's error tree into its leaves (the keywords that really failed, not the
// "allOf failed" / "$ref failed" wrappers around them) and renders the first few on one line.
func describe(err error) string {
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return oneLine(err.Error(), maxMessage)
	}
	var leaves []*jsonschema.ValidationError
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			leaves = append(leaves, e)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	// The library visits object properties in map order: sort so that the same document always gives the
	// same message (stable, so failures at one location keep the schema's order).
	slices.SortStableFunc(leaves, func(a, b *jsonschema.ValidationError) int {
		return slices.Compare(a.InstanceLocation, b.InstanceLocation)
	})
	parts := make([]string, 0, maxReported+1)
	for i, l := range leaves {
		if i == maxReported {
			parts = append(parts, fmt.Sprintf("and %d more", len(leaves)-maxReported))
			break
		}
		parts = append(parts, "at "+pointer(l.InstanceLocation)+": "+oneLine(message(l.ErrorKind), maxMessage))
	}
	return strings.Join(parts, "; ")
}

// pointer renders an instance location as a JSON pointer (RFC 6901), "/" for the document itself.
func pointer(tokens []string) string {
	if len(tokens) == 0 {
		return "/"
	}
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		t = strings.ReplaceAll(t, "/", "~1")
		sb.WriteString(quoteValue(t))
	}
	return sb.String()
}

// message words the common failures the way an operator would say them and falls back to the library's
// wording for the rest.
func message(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Required:
		if len(k.Missing) == 1 {
			return "missing required field " + quote(k.Missing[0])
		}
		return "missing required fields " + quoteAll(k.Missing)
	case *kind.AdditionalProperties:
		if len(k.Properties) == 1 {
			return "unknown field " + quote(k.Properties[0]) + " not allowed"
		}
		return "unknown fields " + quoteAll(k.Properties) + " not allowed"
	case *kind.Type:
		return "must be " + strings.Join(k.Want, " or ") + ", got " + k.Got
	case *kind.Minimum:
		return "must be >= " + ratString(k.Want) + ", got " + ratString(k.Got)
	case *kind.Maximum:
		return "must be <= " + ratString(k.Want) + ", got " + ratString(k.Got)
	case *kind.Pattern:
		return "must match " + k.Want + ", got " + quote(k.Got)
	case *kind.Enum:
		want := make([]string, 0, len(k.Want))
		for _, w := range k.Want {
			want = append(want, fmt.Sprint(w))
		}
		return "must be one of " + strings.Join(want, ", ") + ", got " + quote(fmt.Sprint(k.Got))
	case *kind.Const:
		return fmt.Sprintf("must be %v, got %s", k.Want, quote(fmt.Sprint(k.Got)))
	case *kind.Format:
		return "must be a valid " + k.Want + ", got " + quote(fmt.Sprint(k.Got))
	case *kind.ContentEncoding:
		return "must be " + k.Want + " encoded"
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters long, got %d", k.Want, k.Got)
	}
	// Fall back to the library's English wording, rendered through its own error type (which prefixes the
	// instance location, empty here, since the location is already in front of this message).
	msg := (&jsonschema.ValidationError{ErrorKind: k}).Error()
	if rest, ok := strings.CutPrefix(msg, "at '': "); ok {
		return rest
	}
	return msg
}

func ratString(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	return r.FloatString(6)
}

func quote(s string) string { return "'" + quoteValue(s) + "'" }

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quote(s)
	}
	return strings.Join(q, ", ")
}

// quoteValue shortens a value taken from the document, so that a huge or multi-line string cannot flood a log
// line.
func quoteValue(s string) string { return oneLine(s, maxQuoted) }

// oneLine replaces control characters (newlines included) with spaces and cuts s to max runes; ranging over
// the string already turns invalid UTF-8 into U+FFFD.
func oneLine(s string, max int) string {
	var sb strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			sb.WriteString("...")
			break
		}
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		sb.WriteRune(r)
		n++
	}
	return sb.String()
}
