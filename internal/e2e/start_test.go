package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/simulator"
)

// TestConcurrentStartOnEmptyServer starts eight lr-relay processes at the same moment against an empty
// JetStream server, ten times over: every process must become ready. Each one provisions the same streams,
// consumer and buckets at once, which is what the pods of a new deployment do; a create that loses the race
// must bind what the winner created instead of ending the process.
func TestConcurrentStartOnEmptyServer(t *testing.T) {
	const processes, rounds = 8, 10
	for round := range rounds {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			e := newEnv(t, simulator.Config{})
			procs := make([]*proc, processes)
			addrs := make([]string, processes)
			for i := range procs {
				addrs[i] = freeAddr(t)
			}
			for i := range procs {
				procs[i] = e.startProc(t, fmt.Sprintf("p%d", i), map[string]string{
					"LR_HTTP_ADDR": addrs[i], "LR_LOG_LEVEL": "info", "LR_WORKERS": "2",
				})
			}
			for i, p := range procs {
				waitFor(t, 60*time.Second, p.name+" ready", func() bool {
					if p.exited() {
						t.Fatalf("%s exited during start: %v\n%s", p.name, p.err, p.tail(20))
					}
					return ready(addrs[i]) == http.StatusOK
				})
			}
		})
	}
}
