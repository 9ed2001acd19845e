// Package deploy holds lr-relay's deployment definitions: natscli JSON for the JetStream streams and
// consumer (nats/) and Kubernetes manifests (kubernetes/). It has no code; its tests parse every file,
// create the streams and consumer on an embedded nats-server, and check that the files agree with each
// other and with the defaults in internal/config, so that a typo fails in CI rather than in a cluster.
package deploy
