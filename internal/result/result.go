// Package result defines the structured event that lr-relay publishes for every live response command.
//
// The JSON shape is described by schemas/result.schema.json; every published event is validated against it.
package result

import "time"

// SchemaVersion is the version of the result event format. Version 2 added fields (tenant, the event times,
// relayVersion, the truncation flags) and removed none: a consumer of version 1 reads version 2 unchanged.
const SchemaVersion = 2

// Outcome values say what happened to a command.
const (
	// OutcomeRelayed: the result file was downloaded and parsed.
	OutcomeRelayed = "relayed"
	// OutcomeNoResult: the command has no result file (PutFile, Failed, not completed); no API call was made.
	OutcomeNoResult = "no_result"
	// OutcomeParseError: the file was downloaded but could not be parsed; Raw holds its first bytes.
	OutcomeParseError = "parse_error"
	// OutcomeTooLarge: the content was bigger than the caps allow (including decompression bombs).
	OutcomeTooLarge = "too_large"
	// OutcomeError: the result could not be fetched for a reason that retrying will not fix (the API has no
	// result for this index, the link points to a host that is not allowed, ...); Problem says why.
	OutcomeError = "error"
)

// Event is one result event: one per command of a machine action.
type Event struct {
	SchemaVersion int    `json:"schemaVersion"`
	ActionID      string `json:"actionId"`
	// Tenant is lr-relay's configured name of the tenant ("default" for the LR_MDE_* tenant).
	Tenant string `json:"tenant"`
	// TenantID is the Entra tenant id: the event's, or the configured tenant's when the event has none.
	TenantID        string            `json:"tenantId"`
	Index           int               `json:"index"`
	CommandType     string            `json:"commandType"`
	CommandStatus   string            `json:"commandStatus"`
	Params          map[string]string `json:"params,omitempty"`
	Errors          []string          `json:"errors,omitempty"`
	ActionStatus    string            `json:"actionStatus,omitempty"`
	MachineID       string            `json:"machineId,omitempty"`
	ComputerDNSName string            `json:"computerDnsName,omitempty"`
	Requestor       string            `json:"requestor,omitempty"`
	// RequestorComment is where analysts put the ticket number.
	RequestorComment string     `json:"requestorComment,omitempty"`
	ActionCreatedAt  *time.Time `json:"actionCreatedAt,omitempty"`
	ActionUpdatedAt  *time.Time `json:"actionUpdatedAt,omitempty"`
	CommandStartedAt *time.Time `json:"commandStartedAt,omitempty"`
	CommandEndedAt   *time.Time `json:"commandEndedAt,omitempty"`
	// EventTime is the time a SIEM should file the event under: the command's end, else the action's last
	// update, else RelayedAt.
	EventTime time.Time `json:"eventTime"`
	Outcome   string    `json:"outcome"`
	Script    *Script   `json:"script,omitempty"`
	File      *File     `json:"file,omitempty"`
	Problem   *Problem  `json:"problem,omitempty"`
	Source    *Source   `json:"source,omitempty"`
	// FieldsTruncated is set when fields copied from the source event (params, command errors, problem
	// text) were cut so that the event fits the server's max payload.
	FieldsTruncated bool      `json:"fieldsTruncated,omitempty"`
	RelayedAt       time.Time `json:"relayedAt"`
	RelayVersion    string    `json:"relayVersion"`
}

// Script is the parsed RunScript result file.
type Script struct {
	ScriptName string `json:"scriptName,omitempty"`
	// ExitCode is nil when the file had no exit_code.
	ExitCode *int `json:"exitCode,omitempty"`
	// TranscriptPath is the path from the "Transcript started, output file is <path>" banner, which is
	// removed from Output.
	TranscriptPath string `json:"transcriptPath,omitempty"`
	// Output is the script's stdout without the banner and without trailing NULs. When OutputTruncated is
	// set it holds only a preview: the first and last few KB joined by a marker line; the whole output is
	// then in OutputObject.
	Output string `json:"output"`
	// OutputJSON is Output parsed, when the output is itself a JSON document.
	OutputJSON any `json:"outputJson,omitempty"`
	// OutputJSONOmitted is set when OutputJSON was left out so that the event fits the max payload; the
	// output (inline or in OutputObject) still holds the document.
	OutputJSONOmitted bool `json:"outputJsonOmitted,omitempty"`
	// Errors is script_errors (script_error in older files); "" when null or empty. When ErrorsTruncated is
	// set it is a head/tail preview, and the whole text is in ErrorsObject (when there is an object store).
	Errors          string     `json:"errors,omitempty"`
	ErrorsBytes     int64      `json:"errorsBytes,omitempty"`
	ErrorsTruncated bool       `json:"errorsTruncated,omitempty"`
	ErrorsObject    *ObjectRef `json:"errorsObject,omitempty"`
	// TrailingNULs counts the NUL characters stripped from the end of the output.
	TrailingNULs int `json:"trailingNuls,omitempty"`
	// InvalidUTF8 is set when the output or errors held invalid UTF-8, shown as U+FFFD.
	InvalidUTF8     bool       `json:"invalidUtf8,omitempty"`
	OutputBytes     int64      `json:"outputBytes"`
	OutputTruncated bool       `json:"outputTruncated,omitempty"`
	OutputObject    *ObjectRef `json:"outputObject,omitempty"`
}

// File is the result of a GetFile command: the gunzipped file.
type File struct {
	Name            string `json:"name,omitempty"`
	CompressedBytes int64  `json:"compressedBytes"`
	Bytes           int64  `json:"bytes"`
	SHA256          string `json:"sha256,omitempty"`
	// ContentBase64 holds the content when it is small enough to go inline.
	ContentBase64 string `json:"contentBase64,omitempty"`
	Inline        bool   `json:"inline"`
	// NotInlineReason says why the content is not inline (too large, stored in the object store, ...).
	NotInlineReason string     `json:"notInlineReason,omitempty"`
	Object          *ObjectRef `json:"object,omitempty"`
}

// ObjectRef points to content stored in the JetStream Object Store (a claim check).
type ObjectRef struct {
	Bucket string `json:"bucket"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Problem explains a result that could not be fully produced (a parse error, a cap).
type Problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RawBase64 holds the first bytes of an unparseable file.
	RawBase64    string `json:"rawBase64,omitempty"`
	RawTruncated bool   `json:"rawTruncated,omitempty"`
}

// Source identifies the source event that produced the result.
type Source struct {
	Stream   string `json:"stream,omitempty"`
	Sequence uint64 `json:"sequence,omitempty"`
}
