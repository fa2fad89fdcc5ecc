package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// erringHealth answers every call with a goray error, wrapped as handlers
// usually wrap them, or with a raw status for the service "raw".
type erringHealth struct {
	healthpb.UnimplementedHealthServer
}

func (erringHealth) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == "raw" {
		return nil, status.Error(codes.PermissionDenied, "raw status")
	}
	return nil, fmt.Errorf("check: %w", errs.New(errs.KindAlreadyExists, "box", "an actor named %q exists", req.GetService()))
}

func (erringHealth) Watch(req *healthpb.HealthCheckRequest, _ healthpb.Health_WatchServer) error {
	return errs.New(errs.KindJobFinished, "", "job of %s has finished", req.GetService())
}

func TestErrorInterceptors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions("")...)
	healthpb.RegisterHealthServer(srv, erringHealth{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc, err := Dial(lis.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "box"})
		var e *errs.Error
		if !errors.As(err, &e) || !errors.Is(err, errs.ErrAlreadyExists) || e.Name != "box" {
			t.Fatalf("got %T %v, want an *errs.Error of kind already exists named box", err, err)
		}
		if got := status.Code(err); got != codes.AlreadyExists {
			t.Fatalf("status.Code: got %v, want AlreadyExists", got)
		}
	})
	t.Run("stream", func(t *testing.T) {
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "j"})
		if err == nil {
			_, err = stream.Recv()
		}
		if !errors.Is(err, errs.ErrJobFinished) || !errors.As(err, new(*errs.Error)) {
			t.Fatalf("got %T %v, want an *errs.Error of kind job finished", err, err)
		}
	})
	t.Run("a raw status becomes the kind its code fits", func(t *testing.T) {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "raw"})
		if !errors.Is(err, errs.ErrPermissionDenied) || status.Code(err) != codes.PermissionDenied {
			t.Fatalf("got %T %v, want an *errs.Error of kind permission denied that keeps its code", err, err)
		}
	})
}
