package mde

import (
	"fmt"
	"net/url"
	"strings"
)

// Cloud is one Defender for Endpoint environment: where its API lives, where its tokens come from and which
// scope to ask for. The values come from docs/mde-api.md; operators can still override each of them.
type Cloud struct {
	// Name is the short name operators configure (for example "commercial" or "gcc-high").
	Name string
	// APIURL is the API base URL, without a trailing slash.
	APIURL string
	// TokenURLTemplate is the token endpoint with a literal "{tenant}" where the tenant id goes.
	TokenURLTemplate string
	// Scope is the OAuth2 scope for the client credentials grant.
	Scope string
}

// TokenURL returns the token endpoint for tenantID, escaped so that an odd tenant id cannot change the path.
func (c Cloud) TokenURL(tenantID string) string {
	return strings.ReplaceAll(c.TokenURLTemplate, "{tenant}", url.PathEscape(tenantID))
}

// DefaultCloud is the cloud used when none is configured.
const DefaultCloud = "commercial"

const (
	commercialToken = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
	commercialScope = "https://api.securitycenter.microsoft.com/.default"
	govAPI          = "https://api-gov.securitycenter.microsoft.us"
	govToken        = "https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token"
)

// lookupCloud returns the table entry for a normalised name. It is a function rather than a package-level map
// so that nothing in the package is mutable.
func lookupCloud(name string) (Cloud, bool) {
	switch name {
	case "commercial":
		return Cloud{Name: name, APIURL: "https://api.securitycenter.microsoft.com", TokenURLTemplate: commercialToken, Scope: commercialScope}, true
	case "us", "eu", "uk", "au", "swa", "ina":
		// Regional endpoints of the commercial cloud share its login and scope.
		return Cloud{Name: name, APIURL: "https://" + name + ".api.security.microsoft.com", TokenURLTemplate: commercialToken, Scope: commercialScope}, true
	case "gcc":
		// GCC authenticates against the commercial login; the scope is undocumented, tools use the API host.
		return Cloud{Name: name, APIURL: "https://api-gcc.securitycenter.microsoft.us", TokenURLTemplate: commercialToken, Scope: "https://api-gcc.securitycenter.microsoft.us/.default"}, true
	case "gcc-high", "dod":
		return Cloud{Name: name, APIURL: govAPI, TokenURLTemplate: govToken, Scope: govAPI + "/.default"}, true
	}
	return Cloud{}, false
}

// ResolveCloud returns the cloud called name (case-insensitive; "" means commercial). An unknown name is an
// error that lists the valid names, because it is almost always a typo in the operator's configuration.
func ResolveCloud(name string) (Cloud, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		n = DefaultCloud
	}
	if c, ok := lookupCloud(n); ok {
		return c, nil
	}
	return Cloud{}, fmt.Errorf("mde: unknown cloud %q: valid names are %s", name, strings.Join(CloudNames(), ", "))
}

// CloudNames returns the valid cloud names, for help texts and validation messages.
func CloudNames() []string {
	return []string{"commercial", "us", "eu", "uk", "au", "swa", "ina", "gcc", "gcc-high", "dod"}
}
