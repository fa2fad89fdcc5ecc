package rpc

import (
	"context"
	"errors"

	"github.com/goray/goray/internal/errs"
	"google.golang.org/grpc"
)

// This file is where goray errors cross gRPC, both ways: every server
// converts the *errs.Error its handlers return into a status with an
// ErrorInfo detail (ServerOptions), and every client turns such a status back
// into the *errs.Error (DialOptions). Handlers thus return *errs.Error, never
// ad-hoc status codes, and callers test with errors.Is against errs.ErrX.
// Errors that are not goray errors (a missing token, a closed connection)
// pass through both unchanged.

// serverErr is the error a server sends for a handler's err.
func serverErr(err error) error {
	if err != nil && errors.As(err, new(*errs.Error)) {
		return errs.Status(err)
	}
	return err
}

func unaryServerErrors(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, serverErr(err)
}

func streamServerErrors(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return serverErr(h(srv, ss))
}

func unaryClientErrors(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return errs.FromStatus(invoker(ctx, method, req, reply, cc, opts...))
}

func streamClientErrors(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, errs.FromStatus(err)
	}
	return errClientStream{cs}, nil
}

// errClientStream converts the errors of a client stream's calls as
// unaryClientErrors does; io.EOF and other non-status errors pass unchanged.
type errClientStream struct{ grpc.ClientStream }

func (s errClientStream) SendMsg(m any) error { return errs.FromStatus(s.ClientStream.SendMsg(m)) }
func (s errClientStream) RecvMsg(m any) error { return errs.FromStatus(s.ClientStream.RecvMsg(m)) }
func (s errClientStream) CloseSend() error    { return errs.FromStatus(s.ClientStream.CloseSend()) }
