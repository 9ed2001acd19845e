package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/command"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/download"
)

// Fetch answers an analyst's one-off question without NATS: it gets the action from the API of the default
// tenant and prints the result of each command (or only of index, when >= 0) as a JSON line. Content too large
// to go inline is summarised (size, digest, preview), since there is no object store here.
//
// With dir set, every script output and GetFile content is also written to dir, whatever its size (content
// beyond the inline cap streams straight to disk), as <actionId>_<index>_<name> with a name that cannot leave
// dir; the result's object reference then names that file (bucket: dir), and a line per file goes to report.
func Fetch(ctx context.Context, cfg config.Config, log zerolog.Logger, actionID string, index int, out io.Writer,
	dir string, report io.Writer) error {
	if !action.IsGUID(actionID) {
		return fmt.Errorf("--action %q is not a GUID", actionID)
	}
	cfg.QuotaShared = false
	a := &App{o: Options{Config: cfg, Logger: log, Registry: prometheus.NewRegistry()}, cfg: cfg, log: log}
	route, _, err := a.tenants(ctx, nil)
	if err != nil {
		return err
	}
	t, ok := route("")
	if !ok {
		return fmt.Errorf("fetch uses the default tenant: set LR_MDE_TENANT_ID and LR_MDE_CLIENT_ID")
	}
	dl, err := download.New(a.downloadConfig(), log)
	if err != nil {
		return err
	}
	var store command.Store
	var disk *dirStore
	if dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("--output: %w", err)
		}
		disk = &dirStore{dir: dir}
		defer disk.cleanup()
		store = disk
	}
	proc := command.New(dl, store, a.commandOptions(), log)
	act, err := t.API.GetAction(ctx, actionID)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	found := false
	for _, c := range act.Commands {
		if index >= 0 && c.Index != index {
			continue
		}
		found = true
		ev, err := proc.Result(ctx, command.Tenant{Name: t.Name, ID: t.ID, API: t.API}, act, c)
		var pe *command.ProblemError
		if errors.As(err, &pe) {
			ev, err = proc.Describe(ev, pe), nil
		}
		if err != nil {
			return fmt.Errorf("command %d: %w", c.Index, err)
		}
		if disk != nil {
			path, err := saveResult(dir, ev)
			if err != nil {
				return err
			}
			if path != "" && report != nil {
				n, sum, err := fileDigest(path)
				if err != nil {
					return err
				}
				fmt.Fprintf(report, "wrote %s (%d bytes, sha256 %s)\n", path, n, sum)
			}
		}
		if err := enc.Encode(ev); err != nil {
			return err
		}
	}
	if index >= 0 && !found {
		return fmt.Errorf("action %s has no command with index %d", actionID, index)
	}
	return nil
}
