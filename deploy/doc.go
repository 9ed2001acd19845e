// Package deploy holds lr-relay's deployment definitions: natscli JSON for the JetStream streams and
// consumer (nats/), Kubernetes manifests (kubernetes/), the Helm chart (helm/lr-relay), Prometheus alert
// rules (prometheus/), the Grafana dashboard (grafana/) and the SIEM ingestion kit (siem/). It has no code;
// its tests parse every file, create the streams and consumers on an embedded nats-server, render the chart
// when helm is installed, and check that the files agree with each other, with the result schema and with
// internal/config, so that a typo fails in CI rather than in a cluster.
package deploy
