package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/goray/goray/internal/rpc"
)

// The baselines are plain gRPC between this process and an echo server in
// another process (this binary re-executed), on loopback, with the same
// server and dial options as every goray server (internal/rpc: message
// bounds, keepalives, the cluster-token interceptors): the transport goray
// itself runs on, without goray.
const (
	grpcUnarySeq      = "grpc_unary_seq"
	grpcPingPongSeq   = "grpc_stream_pingpong_seq"
	grpcPipelined     = "grpc_stream_pipelined"
	grpcBulkGigabytes = "grpc_bulk_gigabytes"
	memcpyGigabytes   = "memcpy_gigabytes"
)

const (
	echoServiceName = "goray.bench.v1.EchoService"
	echoReady       = "goray bench echo ready: "
	// smallMsg is the size of the small echoes.
	smallMsg = 8
	// bulkChunk is the chunk size of grpc_bulk_gigabytes (as object pulls).
	bulkChunk = 1 << 20
	// pipelineDepth is how many echoes one pipelined operation sends.
	pipelineDepth = 1000
)

var echoDesc = grpc.ServiceDesc{
	ServiceName: echoServiceName,
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: echoUnary}},
	Streams: []grpc.StreamDesc{
		{StreamName: "Echo", Handler: echoStream, ServerStreams: true, ClientStreams: true},
		{StreamName: "Bulk", Handler: echoBulk, ServerStreams: true},
	},
}

func echoUnary(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.BytesValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	h := func(_ context.Context, req any) (any, error) { return req, nil }
	if ic == nil {
		return h(ctx, in)
	}
	return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + echoServiceName + "/Unary"}, h)
}

func echoStream(_ any, stream grpc.ServerStream) error {
	m := new(wrapperspb.BytesValue)
	for {
		if err := stream.RecvMsg(m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := stream.SendMsg(m); err != nil {
			return err
		}
	}
}

// bulkData is what echoBulk streams: allocated and faulted in once.
var bulkData []byte

func echoBulk(_ any, stream grpc.ServerStream) error {
	req := new(wrapperspb.UInt64Value)
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	size := int(req.GetValue())
	if size > len(bulkData) {
		bulkData = make([]byte, size)
		for i := range bulkData {
			bulkData[i] = byte(i)
		}
	}
	for off := 0; off < size; off += bulkChunk {
		if err := stream.SendMsg(&wrapperspb.BytesValue{Value: bulkData[off:min(off+bulkChunk, size)]}); err != nil {
			return err
		}
	}
	return nil
}

// serveEcho serves the echo service on loopback until ctx ends, after
// printing its ready line to out.
func serveEcho(ctx context.Context, token string, out io.Writer) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer(rpc.ServerOptions(token)...)
	srv.RegisterService(&echoDesc, struct{}{})
	fmt.Fprintf(out, "%saddress=%s\n", echoReady, lis.Addr())
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// echoClient is this process's side of the baselines.
type echoClient struct {
	proc *child
	cc   *grpc.ClientConn
}

func (r *runner) echoServer(ctx context.Context) (*echoClient, error) {
	if r.echo != nil {
		return r.echo, nil
	}
	token, err := rpc.GenerateToken()
	if err != nil {
		return nil, err
	}
	r.progress("    starting the echo server process")
	proc, line, err := startChild(ctx, r.cfg.Exe, []string{envEchoToken + "=" + token}, echoReady, childEcho)
	if err != nil {
		return nil, fmt.Errorf("start echo server: %w", err)
	}
	addr, err := field(line, "address")
	if err != nil {
		proc.stop()
		return nil, err
	}
	cc, err := rpc.Dial(addr, token)
	if err != nil {
		proc.stop()
		return nil, err
	}
	r.echo = &echoClient{proc: proc, cc: cc}
	return r.echo, nil
}

func (e *echoClient) close() {
	e.cc.Close()
	e.proc.stop()
}

func (e *echoClient) stream(ctx context.Context, i int) (grpc.ClientStream, error) {
	d := &echoDesc.Streams[i]
	return e.cc.NewStream(ctx, d, "/"+echoServiceName+"/"+d.StreamName)
}

func baselineSpecs(sz sizes) []*spec {
	per := float64(sz.transfer) / gb
	return append([]*spec{
		{name: grpcUnarySeq, unit: UnitOps, per: 1, setup: func(ctx context.Context, r *runner) (op, func(), error) {
			e, err := r.echoServer(ctx)
			if err != nil {
				return nil, nil, err
			}
			in, out := &wrapperspb.BytesValue{Value: make([]byte, smallMsg)}, new(wrapperspb.BytesValue)
			return func(ctx context.Context, _ *stopwatch) error {
				return e.cc.Invoke(ctx, "/"+echoServiceName+"/Unary", in, out)
			}, func() {}, nil
		}},
		{name: grpcPingPongSeq, unit: UnitOps, per: 1, setup: func(ctx context.Context, r *runner) (op, func(), error) {
			e, err := r.echoServer(ctx)
			if err != nil {
				return nil, nil, err
			}
			sctx, cancel := context.WithCancel(ctx)
			st, err := e.stream(sctx, 0)
			if err != nil {
				cancel()
				return nil, nil, err
			}
			in, out := &wrapperspb.BytesValue{Value: make([]byte, smallMsg)}, new(wrapperspb.BytesValue)
			return func(context.Context, *stopwatch) error {
				if err := st.SendMsg(in); err != nil {
					return err
				}
				return st.RecvMsg(out)
			}, cancel, nil
		}},
		{name: grpcPipelined, unit: UnitOps, per: pipelineDepth, setup: func(ctx context.Context, r *runner) (op, func(), error) {
			e, err := r.echoServer(ctx)
			if err != nil {
				return nil, nil, err
			}
			sctx, cancel := context.WithCancel(ctx)
			st, err := e.stream(sctx, 0)
			if err != nil {
				cancel()
				return nil, nil, err
			}
			in := &wrapperspb.BytesValue{Value: make([]byte, smallMsg)}
			return func(context.Context, *stopwatch) error {
				sent := make(chan error, 1)
				go func() {
					for range pipelineDepth {
						if err := st.SendMsg(in); err != nil {
							sent <- err
							return
						}
					}
					sent <- nil
				}()
				out := new(wrapperspb.BytesValue)
				for range pipelineDepth {
					if err := st.RecvMsg(out); err != nil {
						<-sent
						return err
					}
				}
				return <-sent
			}, cancel, nil
		}},
		{name: grpcBulkGigabytes, unit: UnitGB, per: per, setup: func(ctx context.Context, r *runner) (op, func(), error) {
			e, err := r.echoServer(ctx)
			if err != nil {
				return nil, nil, err
			}
			size := r.sizes.transfer
			return func(ctx context.Context, _ *stopwatch) error {
				sctx, cancel := context.WithCancel(ctx)
				defer cancel()
				st, err := e.stream(sctx, 1)
				if err != nil {
					return err
				}
				if err := st.SendMsg(wrapperspb.UInt64(uint64(size))); err != nil {
					return err
				}
				if err := st.CloseSend(); err != nil {
					return err
				}
				got := 0
				for {
					m := new(wrapperspb.BytesValue)
					if err := st.RecvMsg(m); err != nil {
						if errors.Is(err, io.EOF) {
							break
						}
						return err
					}
					got += len(m.GetValue())
				}
				if got != size {
					return fmt.Errorf("bulk: got %d bytes, want %d", got, size)
				}
				return nil
			}, func() {}, nil
		}},
		{name: memcpyGigabytes, unit: UnitGB, per: per, setup: func(_ context.Context, r *runner) (op, func(), error) {
			src, dst := make([]byte, r.sizes.transfer), make([]byte, r.sizes.transfer)
			for i := range src {
				src[i] = byte(i)
			}
			copy(dst, src) // fault the pages in
			return func(context.Context, *stopwatch) error {
				copy(dst, src)
				return nil
			}, func() {}, nil
		}},
	}, append(append(spillBaselines(sz), fileBaselines(sz)...), coordBaselines()...)...)
}
