// Package e2e holds the end-to-end tests of lr-relay: a real embedded JetStream server, the Defender API
// simulator on a real loopback HTTP server, and the relay itself (in-process, or as separate lr-relay
// processes for the crash tests). It has no non-test code besides this comment.
package e2e
