package quota

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sharedState is the value of one key in the shared bucket: the grant log of
// every replica for the longest window, and the pause in force.
type sharedState struct {
	pausedUntil time.Time
	log         []time.Time // ascending
}

// stateVersion is the first byte of an encoded state, so that the format can
// change without a new replica misreading an old value.
const stateVersion = 1

// maxStateGrants bounds decoding, so that a corrupt or hostile value cannot
// make a replica allocate without limit.
const maxStateGrants = 1 << 20

// errCorruptState is returned for a value that is not a state this package
// wrote.
var errCorruptState = errors.New("corrupt quota state")

// encode writes the state compactly: version, pause (unix nanos, 0 for none),
// count, first grant, then the gaps between grants as unsigned varints. 1500
// grants an hour take about 7.5 KB.
func (s sharedState) encode() []byte {
	buf := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(s.log)*5)
	buf = append(buf, stateVersion)
	var pause int64
	if !s.pausedUntil.IsZero() {
		pause = s.pausedUntil.UnixNano()
	}
	buf = binary.AppendVarint(buf, pause)
	buf = binary.AppendUvarint(buf, uint64(len(s.log)))
	var prev int64
	for i, g := range s.log {
		n := g.UnixNano()
		if i == 0 {
			buf = binary.AppendVarint(buf, n)
		} else {
			buf = binary.AppendUvarint(buf, uint64(max(n-prev, 0)))
		}
		prev = max(n, prev)
	}
	return buf
}

func decodeState(b []byte) (sharedState, error) {
	var s sharedState
	if len(b) == 0 || b[0] != stateVersion {
		return s, fmt.Errorf("%w: unknown version", errCorruptState)
	}
	b = b[1:]
	pause, n := binary.Varint(b)
	if n <= 0 {
		return s, fmt.Errorf("%w: pause", errCorruptState)
	}
	b = b[n:]
	if pause != 0 {
		s.pausedUntil = time.Unix(0, pause)
	}
	count, n := binary.Uvarint(b)
	if n <= 0 || count > maxStateGrants || count > uint64(len(b)) {
		return sharedState{}, fmt.Errorf("%w: count", errCorruptState)
	}
	b = b[n:]
	s.log = make([]time.Time, 0, count)
	var prev int64
	for i := range count {
		var v int64
		if i == 0 {
			v, n = binary.Varint(b)
		} else {
			var gap uint64
			gap, n = binary.Uvarint(b)
			v = prev + int64(gap)
		}
		if n <= 0 || v < prev && i > 0 {
			return sharedState{}, fmt.Errorf("%w: grant %d", errCorruptState, i)
		}
		b = b[n:]
		s.log = append(s.log, time.Unix(0, v))
		prev = v
	}
	if len(b) != 0 {
		return sharedState{}, fmt.Errorf("%w: %d trailing bytes", errCorruptState, len(b))
	}
	return s, nil
}

// mergeTimes returns the ascending union of two ascending logs (duplicates
// kept: counting a grant twice only makes the limiter more careful).
func mergeTimes(a, b []time.Time) []time.Time {
	if len(b) == 0 {
		return a
	}
	out := make([]time.Time, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	slices.SortStableFunc(out, func(x, y time.Time) int { return x.Compare(y) })
	return out
}

// kvKey turns a limiter key into a valid JetStream KV key. Letters, digits,
// '-', '_' and '/' pass through; every other byte (and '=' itself, and '.',
// which KV treats as a token separator) becomes "=XX" in hex. The mapping is
// one-to-one, so two keys never share a budget by accident.
func kvKey(k Key) string {
	key := k.String()
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}

// parseKVKey is the inverse of kvKey; false for a key kvKey does not produce.
func parseKVKey(k string) (Key, bool) {
	b := make([]byte, 0, len(k))
	for i := 0; i < len(k); i++ {
		if k[i] != '=' {
			b = append(b, k[i])
			continue
		}
		if i+2 >= len(k) {
			return Key{}, false
		}
		v, err := strconv.ParseUint(k[i+1:i+3], 16, 8)
		if err != nil {
			return Key{}, false
		}
		b = append(b, byte(v))
		i += 2
	}
	tenant, endpoint, ok := strings.Cut(string(b), "/")
	return Key{Tenant: tenant, Endpoint: endpoint}, ok
}
