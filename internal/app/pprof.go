package app

import (
	"net/http"
	"net/http/pprof"
)

// registerPprof mounts the Go profiler on the app's own mux (LR_PPROF=true). The handlers are registered
// here explicitly: importing net/http/pprof also adds them to http.DefaultServeMux, but lr-relay never serves
// that mux, so nothing is exposed unless LR_PPROF asks for it.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index) // index, and every named profile: heap, allocs, block, goroutine...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
