// Package action describes the Defender machine action that a "live response finished" event carries.
//
// The field names and casing follow the MDE API (GET /api/machineactions/{id}); unknown fields are ignored
// because real payloads carry undocumented extras.
package action

import (
	"regexp"
	"strings"
)

// Command types known to live response.
const (
	TypeRunScript = "RunScript"
	TypeGetFile   = "GetFile"
	TypePutFile   = "PutFile"
)

// Command statuses. The API description also lists Executing, PendingResource and Submitted.
const (
	StatusCompleted = "Completed"
	StatusFailed    = "Failed"
	StatusCreated   = "Created"
)

// MachineAction is the machine action object as the MDE API returns it, plus the optional tenantId that the
// SOAR adds to tell tenants apart.
type MachineAction struct {
	ID                    string    `json:"id"`
	TenantID              string    `json:"tenantId,omitempty"`
	Type                  string    `json:"type,omitempty"`
	Status                string    `json:"status,omitempty"`
	MachineID             string    `json:"machineId,omitempty"`
	ComputerDNSName       string    `json:"computerDnsName,omitempty"`
	Requestor             string    `json:"requestor,omitempty"`
	RequestorComment      string    `json:"requestorComment,omitempty"`
	CreationDateTimeUTC   string    `json:"creationDateTimeUtc,omitempty"`
	LastUpdateDateTimeUTC string    `json:"lastUpdateDateTimeUtc,omitempty"`
	Commands              []Command `json:"commands,omitempty"`
	// HasCommands records whether the event carried a commands array at all (even an empty one); when it
	// did not, the relay fetches the action from the API.
	HasCommands bool `json:"-"`
}

// Command is one live response command inside an action.
type Command struct {
	Index         int         `json:"index"`
	StartTime     string      `json:"startTime,omitempty"`
	EndTime       string      `json:"endTime,omitempty"`
	CommandStatus string      `json:"commandStatus,omitempty"`
	Errors        []string    `json:"errors,omitempty"`
	Command       CommandSpec `json:"command"`
}

// CommandSpec is the command's type and parameters.
type CommandSpec struct {
	Type   string  `json:"type"`
	Params []Param `json:"params,omitempty"`
}

// Param is one key/value parameter of a command (ScriptName, Args, Path, FileName).
type Param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Param returns the value of the named parameter, or "".
func (c CommandSpec) Param(key string) string {
	for _, p := range c.Params {
		if strings.EqualFold(p.Key, key) {
			return p.Value
		}
	}
	return ""
}

// NeedsResult reports whether the command has a result file to download: a Completed RunScript or GetFile.
func (c Command) NeedsResult() bool {
	return c.CommandStatus == StatusCompleted &&
		(c.Command.Type == TypeRunScript || c.Command.Type == TypeGetFile)
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsGUID reports whether s is a GUID in its canonical 8-4-4-4-12 form.
func IsGUID(s string) bool { return guidRE.MatchString(s) }
