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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/deadletters"
	"github.com/lr-relay/lr-relay/internal/demo"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `lr-relay relays Microsoft Defender for Endpoint live response results from NATS JetStream.

Usage:
  lr-relay run                         relay events (configuration from LR_* variables, below);
                                       every setting is checked before NATS is dialled
  lr-relay demo [--json] [--serve]     the whole pipeline on an embedded JetStream and the built-in
                                       Defender API simulator; exits 0 when everything was relayed;
                                       --serve keeps it running to explore (natscli, deadletters)
  lr-relay simulate [--addr A] [--faults F] [--limits L]
                                       serve the Defender API simulator alone (for your playbooks)
  lr-relay fetch --action ID [--index N] [--output DIR]
                                       print one action's results as JSON lines, without NATS;
                                       --output also writes script outputs and files to DIR
  lr-relay deadletters list [--reason R] [--since T]
                                       list the dead-letter records (T: RFC 3339 time or duration)
  lr-relay deadletters show SEQ        print one record and its original payload
  lr-relay deadletters replay [--reason R] [--since T] [--dry-run] [--rate N]
                                       republish the payloads to LR_SOURCE_SUBJECT (N per second),
                                       deleting each record once its payload has a PubAck
  lr-relay version                     print the version (set at build time with -ldflags -X)
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
		return runRelay(args[1:], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "simulate":
		return runSimulate(args[1:], stdout, stderr)
	case "fetch":
		return runFetch(args[1:], stdout, stderr)
	case "deadletters":
		return runDeadLetters(args[1:], stdout, stderr)
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

// loadConfig loads and validates the configuration, printing every problem at once. The warnings (unknown
// LR_ variables, budgets above Microsoft's limits) are returned for the caller to log.
func loadConfig(stderr io.Writer) (config.Config, []string, bool) {
	cfg, err := config.Load()
	if err == nil {
		err = cfg.Validate()
	}
	warnings := append(config.UnknownVariables(os.Environ()), cfg.Warnings()...)
	if err != nil {
		for _, w := range warnings {
			fmt.Fprintf(stderr, "lr-relay: warning: %s\n", w)
		}
		fmt.Fprintf(stderr, "lr-relay: configuration:\n  %s\n(lr-relay --help lists every variable)\n",
			strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return cfg, warnings, false
	}
	return cfg, warnings, true
}

// printWarnings writes the configuration warnings for the commands whose output is for people.
func printWarnings(w io.Writer, warnings []string) {
	for _, s := range warnings {
		fmt.Fprintf(w, "lr-relay: warning: %s\n", s)
	}
}

func runRelay(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		switch a {
		case "-h", "--help", "-help", "help":
			printUsage(stdout)
			return exitOK
		default:
			fmt.Fprintf(stderr, "lr-relay run: unexpected argument %q (configuration is LR_ variables only; lr-relay run --help lists them)\n", a)
			return exitUsage
		}
	}
	cfg, warnings, ok := loadConfig(stderr)
	if ok {
		if err := cfg.RequireTenant(); err != nil {
			fmt.Fprintf(stderr, "lr-relay: configuration:\n  %v\n", err)
			ok = false
		}
	}
	if !ok {
		return exitUsage
	}
	log := newLogger(cfg, stderr)
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
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
	serve := fs.Bool("serve", false, "keep JetStream, the simulator and the relay running after the summary, until Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, warnings, ok := loadConfig(stderr)
	if !ok {
		return exitUsage
	}
	printWarnings(stderr, warnings)
	if os.Getenv("LR_LOG_LEVEL") == "" {
		cfg.LogLevel = "error"
	}
	if os.Getenv("LR_LOG_FORMAT") == "" {
		cfg.LogFormat = "console"
	}
	log := newLogger(cfg, stderr)
	ctx, cancel := signalContext(log)
	defer cancel()
	sum, err := demo.Run(ctx, demo.Options{Config: cfg, Logger: log, Out: stdout, JSON: *asJSON, Timeout: *timeout, Serve: *serve})
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
	output := fs.String("output", "", "also write script outputs and GetFile files to this directory, whatever their size")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *id == "" {
		fmt.Fprintln(stderr, "fetch: --action is required")
		return exitUsage
	}
	cfg, warnings, ok := loadConfig(stderr)
	if !ok {
		return exitUsage
	}
	printWarnings(stderr, warnings)
	log := newLogger(cfg, stderr)
	ctx, cancel := signalContext(log)
	defer cancel()
	if err := app.Fetch(ctx, cfg, log, *id, *index, stdout, *output, stderr); err != nil {
		fmt.Fprintf(stderr, "fetch: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func runDeadLetters(args []string, stdout, stderr io.Writer) int {
	const use = "usage: lr-relay deadletters list [--reason R] [--since T] | show SEQ | replay [--reason R] [--since T] [--dry-run] [--rate N]"
	if len(args) == 0 {
		fmt.Fprintln(stderr, use)
		return exitUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("deadletters "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var reason, since *string
	var dryRun *bool
	var perSecond *float64
	switch sub {
	case "list", "replay":
		reason = fs.String("reason", "", "only records with this reason (e.g. forbidden, unknown_tenant)")
		since = fs.String("since", "", "only records dead-lettered since this RFC 3339 time, or this long ago (2h)")
		if sub == "replay" {
			dryRun = fs.Bool("dry-run", false, "print what would be replayed; publish and delete nothing")
			perSecond = fs.Float64("rate", 5, "most records republished per second")
		}
	case "show":
	default:
		fmt.Fprintln(stderr, use)
		return exitUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	var seq uint64
	if sub == "show" {
		n, err := strconv.ParseUint(fs.Arg(0), 10, 64)
		if fs.NArg() != 1 || err != nil || n == 0 {
			fmt.Fprintln(stderr, "deadletters show: want one record sequence (from deadletters list)")
			return exitUsage
		}
		seq = n
	} else if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "deadletters %s: unexpected argument %q\n", sub, fs.Arg(0))
		return exitUsage
	}
	var filter deadletters.Filter
	if reason != nil {
		t, err := deadletters.ParseSince(*since, time.Now())
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		filter = deadletters.Filter{Reason: *reason, Since: t}
	}
	cfg, warnings, ok := loadConfig(stderr)
	if !ok {
		return exitUsage
	}
	printWarnings(stderr, warnings)
	ctx, cancel := signalContext(newLogger(cfg, stderr))
	defer cancel()
	nc, js, err := deadletters.Connect(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "deadletters: %v\n", err)
		return exitFailure
	}
	defer nc.Close()
	tool := deadletters.New(js, deadletters.OptionsFrom(cfg))
	switch sub {
	case "list":
		entries, err := tool.List(ctx, filter)
		if err == nil {
			err = deadletters.WriteList(stdout, entries)
		}
		if err != nil {
			fmt.Fprintf(stderr, "deadletters list: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stderr, "%d record(s)\n", len(entries))
	case "show":
		e, err := tool.Get(ctx, seq)
		if err != nil {
			fmt.Fprintf(stderr, "deadletters show: %v\n", err)
			return exitFailure
		}
		payload, perr := tool.Payload(ctx, e)
		if err := deadletters.WriteShow(stdout, e, payload, perr); err != nil || perr != nil {
			return exitFailure
		}
	case "replay":
		rep, err := tool.Replay(ctx, deadletters.ReplayOptions{Filter: filter, DryRun: *dryRun, Rate: *perSecond, Out: stdout})
		note := ""
		if *dryRun {
			note = " (dry run: nothing published or deleted)"
		}
		fmt.Fprintf(stderr, "%d selected, %d replayed (%d already enqueued by an earlier run), %d skipped%s\n",
			rep.Selected, rep.Replayed, rep.Duplicates, rep.Skipped, note)
		if err != nil {
			fmt.Fprintf(stderr, "deadletters replay: %v\n", err)
			return exitFailure
		}
	}
	return exitOK
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
