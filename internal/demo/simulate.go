package demo

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

// SimulateOptions configures `lr-relay simulate`.
type SimulateOptions struct {
	Addr   string
	Faults string
	Limits string
	Out    io.Writer
	Logger zerolog.Logger
}

// Simulate serves the Defender API simulator, loaded with the sample actions, until ctx ends.
func Simulate(ctx context.Context, o SimulateOptions) error {
	faults, err := simulator.ParseFaults(o.Faults)
	if err != nil {
		return fmt.Errorf("LR_SIM_FAULTS: %w", err)
	}
	sim, err := simulator.New(simulator.Config{LinkLimits: o.Limits, ActionLimits: o.Limits, Faults: faults, Log: o.Logger})
	if err != nil {
		return err
	}
	samples := append(simulator.SampleActions(simulator.DefaultTenantID), simulator.LargeSampleActions(simulator.DefaultTenantID)...)
	for _, a := range samples {
		sim.AddAction(a)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	fmt.Fprintf(o.Out, `Defender API simulator on http://%[1]s (throttle %[2]s, faults %[3]q)
Point lr-relay (or your playbook) at it with:
  LR_MDE_API_URL=http://%[1]s
  LR_MDE_TOKEN_URL=http://%[1]s/{tenant}/oauth2/v2.0/token
  LR_MDE_TENANT_ID=%[4]s LR_MDE_CLIENT_ID=%[5]s LR_MDE_CLIENT_SECRET=%[6]s
  LR_DOWNLOAD_ALLOW_HTTP=true LR_DOWNLOAD_ALLOWED_HOSTS=%[1]s
Sample actions:
`, addr, o.Limits, o.Faults, simulator.DefaultTenantID, simulator.DefaultClientID, simulator.DefaultClientSecret)
	for _, a := range samples {
		fmt.Fprintf(o.Out, "  %s  %d command(s)\n", a.MachineAction.ID, len(a.MachineAction.Commands))
	}
	return sim.Serve(ctx, ln)
}

func simulatorAction(id string) action.MachineAction {
	return action.MachineAction{
		ID: id, Type: "LiveResponse", Status: "Succeeded", MachineID: "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
		ComputerDNSName: "forbidden.contoso.local",
		Commands: []action.Command{{Index: 0, CommandStatus: action.StatusCompleted,
			Command: action.CommandSpec{Type: action.TypeRunScript, Params: []action.Param{{Key: "ScriptName", Value: "x.ps1"}}}}},
	}
}
