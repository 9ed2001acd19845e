package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkScale runs the scale scenario at 200 and 1,000 configured tenants on 1, 2 and 4 lr-relay processes
// (issue 12): every tenant but one holds a backlog beyond its windows, the last one sends a trickle of 5
// single-command events, and every token issued before a moment early in the run expires at that moment. Each
// sub-benchmark is one run of a minute or two, whatever b.N says:
//
//	go test -run '^$' -bench 'Scale/tenants=200/procs=2' -benchtime 1x -timeout 30m -v ./internal/e2e/
//
// The windows are scaled so that all tenants together ask for about 100-200 calls a second, which the 2-core
// machine serves; per tenant that leaves few calls in the measured interval, so one call missed shows as
// several percent. The table of each run is logged; the main figures are also reported as benchmark metrics.
func BenchmarkScale(b *testing.B) {
	if raceEnabled {
		b.Skip("the scale benchmark runs lr-relay processes; see startProc")
	}
	// The RSS of an idle process configured with one tenant (what a process costs without tenants), measured
	// once, in the first run's world.
	var base int64
	baseline := func(b *testing.B) int64 {
		if base == 0 {
			f := scaleRun(b, scaleSpec{procs: 1, workers: 8, limits: "1/1s", idleFor: time.Second, logLevel: "warn"})
			base = f.idleRSS[0]
		}
		return base
	}
	type shape struct {
		limits   string
		events   int
		perEvent int
		measure  time.Duration
		expiry   time.Duration
		// trickleGap keeps the trickle tenant under its own windows (a quiet tenant): 5 events in 4 gaps.
		trickleGap time.Duration
	}
	shapes := map[int]shape{
		// Per tenant 1/1s and 10/20s: 0.5 call/s in the long run, 100/s for all; 20 calls allowed in 40s.
		200: {limits: "1/1s,10/20s", events: 2, perEvent: 14, measure: 40 * time.Second, expiry: 32 * time.Second, trickleGap: 2 * time.Second},
		// Per tenant 1/5s and 4/40s: 0.1 call/s, 100/s for all; 8 calls allowed in 80s.
		1000: {limits: "1/5s,4/40s", events: 2, perEvent: 5, measure: 80 * time.Second, expiry: 60 * time.Second, trickleGap: 10 * time.Second},
	}
	// Idle tenants: 1,000 configured, nothing published. What an idle process costs depends on its workers
	// (each idle worker renews a pull request every 5s), not on its tenants.
	for _, workers := range []int{8, 1000} {
		b.Run(fmt.Sprintf("idle/tenants=1000/workers=%d", workers), func(b *testing.B) {
			base := baseline(b)
			const idleFor = 10 * time.Second
			f := scaleRun(b, scaleSpec{tenants: 999, procs: 1, workers: workers, limits: "1/5s", idleFor: idleFor, logLevel: "warn"})
			perTenant := float64(f.idleRSS[0]-base) / 1000 / 1024
			b.Logf("1000 idle tenants, %d workers, over %s once ready: CPU %.2f s, %d token requests, %d KV writes; RSS %.1f MiB, %.1f KiB per tenant over the one-tenant idle %.1f MiB",
				workers, idleFor, f.idleCPU, f.idleTokens, f.idleKVWrites, bigMiB(f.idleRSS[0]), perTenant, bigMiB(base))
			b.ReportMetric(f.idleCPU/idleFor.Seconds(), "idle_CPU_s/s")
			b.ReportMetric(float64(f.idleTokens), "idle_token_req")
			b.ReportMetric(float64(f.idleKVWrites), "idle_KV_writes")
			b.ReportMetric(perTenant, "idle_RSS_KiB/tenant")
			b.ReportMetric(0, "ns/op")
		})
	}
	for _, tenants := range []int{200, 1000} {
		for _, procs := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("tenants=%d/procs=%d", tenants, procs), func(b *testing.B) {
				sh := shapes[tenants]
				backlogged := tenants - 1
				// Workers hold an event only while its calls are made and its results published (an event
				// waiting for its tenant's budget is parked), so 64 per process are plenty.
				workers := 64
				s := scaleSpec{
					tenants: backlogged, procs: procs, workers: workers,
					limits: sh.limits, events: sh.events, perEvent: sh.perEvent, measure: sh.measure,
					trickle: 5, trickleGap: sh.trickleGap, tokenExpiry: sh.expiry, idleFor: 5 * time.Second,
					logLevel: "warn",
				}
				base := baseline(b)
				f := scaleRun(b, s)
				var peak int64
				for _, r := range f.peakRSS {
					peak = max(peak, r)
				}
				// Per configured tenant, per process (each process configures every tenant): at the peak of the run,
				// and once ready, before any event.
				perTenant := float64(peak-base) / float64(s.configured()) / 1024
				var idle int64
				for _, r := range f.idleRSS {
					idle = max(idle, r)
				}
				idlePerTenant := float64(idle-base) / float64(s.configured()) / 1024
				lat := slices.Clone(f.trickleLatency)
				slices.Sort(lat)
				b.Logf("%d tenants, %d processes:\n%s| %-38s | %.1f KiB ((peak %.1f MiB - one-tenant idle %.1f MiB) / %d) |\n| %-38s | %.1f KiB ((%.1f MiB - %.1f MiB) / %d) |\n",
					tenants, procs, scaleSummary(f), "RSS per configured tenant, peak", perTenant, bigMiB(peak), bigMiB(base), s.configured(),
					"RSS per configured tenant, idle", idlePerTenant, bigMiB(idle), bigMiB(base), s.configured())
				w := f.worst()
				b.ReportMetric(100*f.utilisation(), "util_%")
				b.ReportMetric(100*w.utilisation(), "worst_util_%")
				b.ReportMetric(float64(f.throttled), "429s")
				b.ReportMetric(bigMiB(peak), "peak_RSS_MiB")
				b.ReportMetric(perTenant, "RSS_KiB/tenant")
				if f.admitted > 0 {
					b.ReportMetric(float64(f.kvTapBytes)/float64(f.admitted), "KV_B/call")
				}
				if f.results > 0 {
					b.ReportMetric(1000*f.cpu/float64(f.results), "CPU_s/1000results")
				}
				b.ReportMetric(float64(f.tokenPeakSecond), "token_req_peak/s")
				b.ReportMetric(scalePercentile(lat, 0.99).Seconds(), "trickle_p99_s")
				b.ReportMetric(scalePercentile(f.trickleExcess(), 0.99).Seconds(), "trickle_excess_p99_s")
				b.ReportMetric(0, "ns/op") // one run per sub-benchmark: the time per op says nothing
			})
		}
	}
}
