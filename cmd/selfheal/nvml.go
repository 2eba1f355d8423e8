//go:build !selfheal_nvml_fixture || !cgo

package main

import (
	"log/slog"

	"github.com/selfheal/selfheal/remediator/server"
)

// nvmlOverride is nil: the real driver. The game days build selfheal with
// the tag selfheal_nvml_fixture to replace it (nvml_fixture.go).
func nvmlOverride(*slog.Logger) (server.NVML, error) { return nil, nil }
