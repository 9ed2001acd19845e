package quota

// Key names one budget: a tenant's calls to one endpoint. Every key has its own
// grant log; the two fields are the labels of the quota metrics.
type Key struct {
	// Tenant is lr-relay's name for the tenant (a closed set: the configured tenants).
	Tenant string
	// Endpoint is the throttled operation, EndpointLinks or EndpointActions.
	Endpoint string
}

// The endpoints lr-relay budgets. Each has its own windows (LR_RATE_LIMITS and LR_ACTION_RATE_LIMITS).
const (
	// EndpointLinks is GetLiveResponseResultDownloadLink.
	EndpointLinks = "links"
	// EndpointActions is GET machineactions/{id}.
	EndpointActions = "actions"
)

// String returns "<tenant>/<endpoint>", the form used in logs and, escaped, as
// the KV key of the shared budget.
func (k Key) String() string { return k.Tenant + "/" + k.Endpoint }
