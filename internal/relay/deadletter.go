package relay

import (
	"encoding/base64"
	"encoding/json"
	"time"
)

// Dead-letter reason codes (schemas/deadletter.schema.json).
const (
	ReasonInvalidJSON       = "invalid_json"
	ReasonSchemaViolation   = "schema_violation"
	ReasonInvalidID         = "invalid_id"
	ReasonActionNotFound    = "action_not_found"
	ReasonForbidden         = "forbidden"
	ReasonUnknownTenant     = "unknown_tenant"
	ReasonMaxDeliveries     = "max_deliveries"
	ReasonPermanentAPIError = "permanent_api_error"
	ReasonInternal          = "internal"
)

// DeadLetter is the record stored for an event that cannot be relayed. It keeps the original payload, so
// nothing is lost: an operator can fix the cause and republish it.
type DeadLetter struct {
	SchemaVersion  int             `json:"schemaVersion"`
	Reason         string          `json:"reason"`
	Message        string          `json:"message"`
	PayloadBase64  string          `json:"payloadBase64"`
	PayloadJSON    json.RawMessage `json:"payloadJson,omitempty"`
	Stream         string          `json:"stream"`
	Sequence       uint64          `json:"sequence"`
	Deliveries     uint64          `json:"deliveries"`
	Subject        string          `json:"subject"`
	ActionID       string          `json:"actionId,omitempty"`
	Index          *int            `json:"index,omitempty"`
	TenantID       string          `json:"tenantId,omitempty"`
	Target         string          `json:"target,omitempty"`
	DeadLetteredAt time.Time       `json:"deadLetteredAt"`
}

func newDeadLetter(reason, message string, payload []byte, src msgSource, now time.Time) *DeadLetter {
	d := &DeadLetter{
		SchemaVersion:  1,
		Reason:         reason,
		Message:        message,
		PayloadBase64:  base64.StdEncoding.EncodeToString(payload),
		Stream:         src.stream,
		Sequence:       src.sequence,
		Deliveries:     src.deliveries,
		Subject:        src.subject,
		DeadLetteredAt: now.UTC(),
	}
	if json.Valid(payload) {
		d.PayloadJSON = json.RawMessage(payload)
	}
	return d
}

type msgSource struct {
	stream     string
	subject    string
	sequence   uint64
	deliveries uint64
}
