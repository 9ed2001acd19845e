// Command lr-relay relays Microsoft Defender for Endpoint live response results from NATS JetStream to a
// results stream, one structured event per command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/demo"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `lr-relay relays Microsoft Defender for Endpoint live response results from NATS JetStream.

Usage:
  lr-relay run                         relay events (configuration from LR_* variables, below)
  lr-relay demo [--json]               the whole pipeline on an embedded JetStream and the built-in
                                       Defender API simulator; exits 0 when everything was relayed
  lr-relay simulate [--addr A] [--faults F] [--limits L]
                                       serve the Defender API simulator alone (for your playbooks)
  lr-relay fetch --action ID [--index N]
                                       print one action's results as JSON lines, without NATS
  lr-relay version
  lr-relay --help

Environment (every setting; default after the name):
`

// exit codes
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help", "-help":
		printUsage(stdout)
		return exitOK
	case "help-markdown":
		if err := config.MarkdownTable(stdout); err != nil {
			return exitFailure
		}
		return exitOK
	case "version", "--version":
		fmt.Fprintln(stdout, app.Version)
		return exitOK
	case "run":
		return runRelay(stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "simulate":
		return runSimulate(args[1:], stdout, stderr)
	case "fetch":
		return runFetch(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "lr-relay: unknown command %q\n\n", args[0])
		printUsage(stderr)
		return exitUsage
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, usage)
	_ = config.PrintUsage(w)
	fmt.Fprint(w, `
Simulator settings (lr-relay simulate):
  LR_SIM_ADDR     127.0.0.1:8080   listen address
  LR_SIM_FAULTS   (none)           fault modes, e.g. 5xx=0.05,reset=0.02,timeout=0.02,slowdrip=0.05,expire=0.1,token=0.05,storm=0.01
  LR_SIM_LIMITS   100/1m,1500/1h   sliding-window throttle the simulator enforces
`)
}

// signalContext cancels on the first SIGTERM or SIGINT; a second one forces the process out.
func signalContext(log zerolog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-ch
		log.Info().Str("signal", sig.String()).Msg("shutting down; send it again to force exit")
		cancel()
		sig = <-ch
		log.Warn().Str("signal", sig.String()).Msg("second signal: exiting now")
		os.Exit(exitFailure)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

func newLogger(cfg config.Config, w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(strings.ToLower(cfg.LogLevel))
	if err != nil {
		level = zerolog.InfoLevel
	}
	if cfg.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

func loadConfig(stderr io.Writer) (config.Config, bool) {
	cfg, err := config.Load()
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "lr-relay: configuration:\n  %s\n(lr-relay --help lists every variable)\n",
			strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return cfg, false
	}
	return cfg, true
}

func runRelay(stderr io.Writer) int {
	cfg, ok := loadConfig(stderr)
	if !ok {
		return exitUsage
	}
	log := newLogger(cfg, stderr)
	ctx, cancel := signalContext(log)
	defer cancel()
	a, err := app.New(app.Options{Config: cfg, Logger: log, Registry: app.NewRegistry()})
	if err != nil {
		log.Error().Err(err).Msg("invalid configuration")
		return exitUsage
	}
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error().Err(err).Msg("lr-relay stopped")
		return exitFailure
	}
	log.Info().Msg("stopped")
	return exitOK
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print every result event as a JSON line")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, ok := loadConfig(stderr)
	if !ok {
		return exitUsage
	}
	if os.Getenv("LR_LOG_LEVEL") == "" {
		cfg.LogLevel = "error"
	}
	if os.Getenv("LR_LOG_FORMAT") == "" {
		cfg.LogFormat = "console"
	}
	log := newLogger(cfg, stderr)
	ctx, cancel := signalContext(log)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, *timeout)
	defer cancelT()
	sum, err := demo.Run(ctx, demo.Options{Config: cfg, Logger: log, Out: stdout, JSON: *asJSON})
	if err != nil {
		fmt.Fprintf(stderr, "demo failed: %v\n", err)
		return exitFailure
	}
	if !sum.OK() {
		return exitFailure
	}
	return exitOK
}

func runSimulate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("LR_SIM_ADDR", "127.0.0.1:8080"), "listen address")
	faults := fs.String("faults", os.Getenv("LR_SIM_FAULTS"), "fault modes")
	limits := fs.String("limits", envOr("LR_SIM_LIMITS", simulator.DefaultLimits), "throttle windows")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, _ := config.Load()
	log := newLogger(cfg, stderr)
	ctx, cancel := signalContext(log)
	defer cancel()
	if err := demo.Simulate(ctx, demo.SimulateOptions{Addr: *addr, Faults: *faults, Limits: *limits, Out: stdout, Logger: log}); err != nil {
		fmt.Fprintf(stderr, "simulate: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func runFetch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("action", "", "machine action id (GUID)")
	index := fs.Int("index", -1, "only this command index (default: every command)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *id == "" {
		fmt.Fprintln(stderr, "fetch: --action is required")
		return exitUsage
	}
	cfg, ok := loadConfig(stderr)
	if !ok {
		return exitUsage
	}
	log := newLogger(cfg, stderr)
	ctx, cancel := signalContext(log)
	defer cancel()
	if err := app.Fetch(ctx, cfg, log, *id, *index, stdout); err != nil {
		fmt.Fprintf(stderr, "fetch: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
