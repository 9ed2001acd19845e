// Package quota keeps calls to a throttled API under every one of its sliding
// windows (for the MDE result-link endpoint: 100 calls per minute and 1500 calls
// per hour per tenant) without wasting any of the budget.
//
// The limiters here keep an exact log of grant times per key rather than a token
// bucket: a bucket with burst b lets b+N calls into some window of length w, which
// is exactly the N+1th call the server answers with a 429. With a log, a call is
// granted at time t only when, for every window (N, w), fewer than N grants lie in
// (t-w, t]; so no half-open interval of length w ever holds more than N grants,
// and a waiting call is granted at the first instant that is true.
//
// Local serves one process. Shared serves many processes that share one budget
// through a JetStream key-value bucket updated with compare-and-swap.
//
// A Key is a tenant and an endpoint; every key has its own budget. Metrics are
// labelled by the key's two fields and never by request or action ids.
package quota
