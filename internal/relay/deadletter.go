package relay

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lr-relay/lr-relay/internal/command"
	"github.com/lr-relay/lr-relay/internal/result"
)

// Dead-letter reason codes (schemas/deadletter.schema.json). They are a closed set: metrics label by them.
const (
	ReasonInvalidJSON       = "invalid_json"
	ReasonSchemaViolation   = "schema_violation"
	ReasonInvalidID         = "invalid_id"
	ReasonInputTooLarge     = "input_too_large"
	ReasonActionNotFound    = command.ReasonActionNotFound
	ReasonForbidden         = command.ReasonForbidden
	ReasonUnknownTenant     = "unknown_tenant"
	ReasonMaxDeliveries     = "max_deliveries"
	ReasonPermanentAPIError = command.ReasonPermanentAPIError
	ReasonInternal          = "internal"
)

// Reasons lists every dead-letter reason, for metrics that must start at zero.
var Reasons = []string{ReasonInvalidJSON, ReasonSchemaViolation, ReasonInvalidID, ReasonInputTooLarge,
	ReasonActionNotFound, ReasonForbidden, ReasonUnknownTenant, ReasonMaxDeliveries, ReasonPermanentAPIError,
	ReasonInternal}

// DeadLetterSchemaVersion is the version of the dead-letter record. Version 2 added tenant, eventTime,
// relayVersion and the fields of a payload too large to keep inline.
const DeadLetterSchemaVersion = 2

// DeadLetter is the record stored for an event that cannot be relayed. It keeps the original payload, so
// nothing is lost: an operator can fix the cause and republish it. A payload too large for the record to fit
// the server's max payload is kept whole in the Object Store (PayloadObject), and the record holds its first
// bytes, its size and its SHA-256.
type DeadLetter struct {
	SchemaVersion    int               `json:"schemaVersion"`
	Reason           string            `json:"reason"`
	Message          string            `json:"message"`
	PayloadBase64    string            `json:"payloadBase64"`
	PayloadJSON      json.RawMessage   `json:"payloadJson,omitempty"`
	PayloadBytes     int               `json:"payloadBytes"`
	PayloadSHA256    string            `json:"payloadSha256"`
	PayloadTruncated bool              `json:"payloadTruncated,omitempty"`
	PayloadObject    *result.ObjectRef `json:"payloadObject,omitempty"`
	Stream           string            `json:"stream"`
	Sequence         uint64            `json:"sequence"`
	Deliveries       uint64            `json:"deliveries"`
	Subject          string            `json:"subject"`
	ActionID         string            `json:"actionId,omitempty"`
	Index            *int              `json:"index,omitempty"`
	Tenant           string            `json:"tenant,omitempty"`
	TenantID         string            `json:"tenantId,omitempty"`
	Target           string            `json:"target,omitempty"`
	DeadLetteredAt   time.Time         `json:"deadLetteredAt"`
	// EventTime is when the record was made (DeadLetteredAt): the time a SIEM files it under.
	EventTime    time.Time `json:"eventTime"`
	RelayVersion string    `json:"relayVersion"`
}

// Limits of the parts of a record that the event or an error controls.
const (
	maxMessage       = 4 << 10  // the error text
	payloadPrefixMax = 16 << 10 // payload bytes kept in a record whose payload is in the Object Store
)

func newDeadLetter(d decision, payload []byte, src msgSource, now time.Time, version string) *DeadLetter {
	sum := sha256.Sum256(payload)
	dl := &DeadLetter{
		SchemaVersion:  DeadLetterSchemaVersion,
		Reason:         d.reason,
		Message:        truncate(errText(d.err), maxMessage),
		PayloadBase64:  base64.StdEncoding.EncodeToString(payload),
		PayloadBytes:   len(payload),
		PayloadSHA256:  hex.EncodeToString(sum[:]),
		Stream:         src.stream,
		Sequence:       src.sequence,
		Deliveries:     src.deliveries,
		Subject:        src.subject,
		ActionID:       truncate(d.actID, 80),
		Index:          d.index,
		Tenant:         d.tenant,
		TenantID:       truncate(d.tenantID, 128),
		Target:         truncate(d.target, 128),
		DeadLetteredAt: now.UTC(),
		EventTime:      now.UTC(),
		RelayVersion:   version,
	}
	if json.Valid(payload) {
		dl.PayloadJSON = json.RawMessage(payload)
	}
	return dl
}

// encodeDeadLetter returns the record as JSON of at most limit bytes: the payload whole (twice when it is
// JSON: base64 and as is), else once, else its first bytes with the whole payload in the Object Store.
func (r *Relay) encodeDeadLetter(ctx context.Context, dl *DeadLetter, payload []byte, limit int) ([]byte, error) {
	b, err := json.Marshal(dl)
	if err != nil || len(b) <= limit {
		return b, err
	}
	dl.PayloadJSON = nil
	if b, err = json.Marshal(dl); err != nil || len(b) <= limit {
		return b, err
	}
	if r.o.Payloads == nil {
		return nil, fmt.Errorf("dead-letter record of %d bytes is over the max payload of %d and there is no object store for its payload", len(b), limit)
	}
	name := fmt.Sprintf("deadletters/%s/%d", dl.Stream, dl.Sequence)
	ref, err := r.o.Payloads.Put(ctx, name, map[string]string{"kind": "deadletter-payload", "reason": dl.Reason}, payload)
	if err != nil {
		return nil, fmt.Errorf("storing the payload of the dead-letter record: %w", err)
	}
	dl.PayloadObject, dl.PayloadTruncated = ref, true
	dl.PayloadBase64 = base64.StdEncoding.EncodeToString(payload[:min(len(payload), payloadPrefixMax)])
	return json.Marshal(dl)
}

type msgSource struct {
	stream     string
	subject    string
	sequence   uint64
	deliveries uint64
}
