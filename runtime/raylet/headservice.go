package raylet

import (
	"log/slog"

	"google.golang.org/grpc"
)

// HeadService is a further gRPC service that `raylet --head` serves on its
// port beside the head's own — the client gateway (internal/gateway, the
// public ClientService) is one. It is a hook in Config rather than an import
// because the gateway is built on the core worker, which imports this
// package; cmd/raylet wires the gateway in.
type HeadService interface {
	// Register registers the service on the head's server before it serves.
	Register(*grpc.Server)
	// Close stops the service; Stop calls it after the raylet's workers are
	// gone and before the server stops.
	Close()
}

// HeadInfo is what a HeadService is made from.
type HeadInfo struct {
	// Address is the head's (and its node's) address.
	Address string
	// Token is the cluster token ("" with NoAuth).
	Token  string
	Logger *slog.Logger
}

// HeadServiceFunc makes a HeadService once the head listens.
type HeadServiceFunc func(HeadInfo) (HeadService, error)
