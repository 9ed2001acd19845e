package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// otherVariables are LR_ variables read outside Config: the simulator's (lr-relay simulate) and the knobs of
// the test suite, which starts lr-relay processes with them set. They are known, so they draw no warning.
func otherVariables() []string {
	return []string{
		"LR_SIM_ADDR", "LR_SIM_FAULTS", "LR_SIM_LIMITS",
		"LR_BENCH_BIG", "LR_BENCH_BYTES", "LR_QUOTA_MIN_UTILISATION", "LR_DERIVE_NATS_SUBJECTS",
	}
}

// field is one envconfig field of Config: the variable operators set and the Go type it is parsed into.
type field struct {
	name string // LR_ name
	alt  string // the unprefixed name envconfig falls back to when the LR_ one is not set
	typ  reflect.Type
}

func fields() []field {
	typ := reflect.TypeFor[Config]()
	var out []field
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("envconfig")
		if tag == "" || !f.IsExported() {
			continue
		}
		out = append(out, field{name: Prefix + "_" + strings.ToUpper(tag), alt: strings.ToUpper(tag), typ: f.Type})
	}
	return out
}

// checkValues parses every variable that is set the way envconfig will, and reports every one that does not
// parse, naming the variable, its value and the form expected. envconfig stops at the first bad value, and
// its message names a Go type ("converting 'eight' to type int") rather than what to write.
func checkValues(lookup func(string) (string, bool)) error {
	var errs []error
	for _, f := range fields() {
		name := f.name
		value, ok := lookup(name)
		if !ok {
			// envconfig reads the unprefixed name when the LR_ one is unset; so do we, to report what it would.
			if value, ok = lookup(f.alt); !ok {
				continue
			}
			name = f.alt
		}
		if problem := parseProblem(f.typ, value); problem != "" {
			errs = append(errs, fmt.Errorf("%s=%s: %s", name, quoteValue(value), problem))
		}
	}
	return errors.Join(errs...)
}

var durationType = reflect.TypeFor[time.Duration]()

// parseProblem says what is wrong with value for a field of type t, or returns "" when envconfig will accept
// it. It follows envconfig's rules: integers in any base strconv accepts, durations in time.ParseDuration
// syntax, lists split on commas without trimming.
func parseProblem(t reflect.Type, value string) string {
	if t == durationType {
		if _, err := time.ParseDuration(value); err != nil {
			if _, nerr := strconv.ParseFloat(strings.TrimSpace(value), 64); nerr == nil {
				return "must be a duration such as 30s or 5m (a number needs a unit)"
			}
			return "must be a duration such as 30s or 5m"
		}
		return ""
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if _, err := strconv.ParseInt(value, 0, t.Bits()); err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return "is out of range"
			}
			return "must be an integer"
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if _, err := strconv.ParseUint(value, 0, t.Bits()); err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return "is out of range"
			}
			return "must be a non-negative integer"
		}
	case reflect.Float32, reflect.Float64:
		if _, err := strconv.ParseFloat(value, t.Bits()); err != nil {
			return "must be a number"
		}
	case reflect.Bool:
		if _, err := strconv.ParseBool(value); err != nil {
			return "must be true or false"
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 || strings.TrimSpace(value) == "" {
			return ""
		}
		for i, item := range strings.Split(value, ",") {
			if p := parseProblem(t.Elem(), item); p != "" {
				what := "values"
				if t.Elem() == durationType {
					what = "durations such as 5s,1m"
				}
				return fmt.Sprintf("must be a comma-separated list of %s, without spaces: item %d %q %s", what, i+1, item, p)
			}
		}
	}
	return ""
}

// quoteValue quotes a value for a message, cut to a readable length. Only values of non-string fields reach
// it (a string always parses), so it never repeats a secret.
func quoteValue(v string) string {
	const max = 64
	if len(v) > max {
		return strconv.Quote(v[:max]) + "…"
	}
	return strconv.Quote(v)
}

// UnknownVariables returns one warning for every LR_ variable in environ (os.Environ's form) that lr-relay
// does not read, with the closest known name when there is one, so that a typo such as LR_WORKS=3 is not
// silently ignored. A known name in the wrong case is named as such: environment names are case-sensitive.
func UnknownVariables(environ []string) []string {
	var known []string
	for _, f := range fields() {
		known = append(known, f.name)
	}
	known = append(known, otherVariables()...)
	slices.Sort(known)
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if !strings.HasPrefix(upper, Prefix+"_") || slices.Contains(known, name) {
			continue
		}
		msg := name + " is not a known variable"
		if slices.Contains(known, upper) {
			msg += " (names are case-sensitive); did you mean " + upper + "?"
		} else if best := Closest(upper, known); best != "" {
			msg += "; did you mean " + best + "?"
		} else {
			msg += " (lr-relay --help lists every variable)"
		}
		out = append(out, msg)
	}
	slices.Sort(out)
	return out
}

// Closest returns the candidate nearest to s by edit distance, or "" when none is near enough to be a typo
// of it: at most 2 edits, or a third of the name for longer names. Ties go to the first candidate.
func Closest(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		if d := editDistance(s, c); bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	if bestD < 0 || bestD > max(2, (len(strings.TrimPrefix(s, Prefix+"_"))+2)/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (insertions, deletions and substitutions).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
