package bench

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

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
	// tcpLoopbackGigabytes is plain TCP between two processes: the
	// transport's own ceiling, without gRPC's framing (issue 17).
	tcpLoopbackGigabytes = "tcp_loopback_gigabytes"
	memcpyGigabytes      = "memcpy_gigabytes"
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
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		lis.Close()
		return err
	}
	srv := grpc.NewServer(rpc.ServerOptions(token)...)
	srv.RegisterService(&echoDesc, struct{}{})
	fmt.Fprintf(out, "%saddress=%s tcp=%s\n", echoReady, lis.Addr(), raw.Addr())
	go serveRawTCP(raw, token)
	go func() {
		<-ctx.Done()
		srv.Stop()
		raw.Close()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// serveRawTCP serves tcp_loopback_gigabytes: each connection sends the
// token, then asks for sizes (8 bytes, little endian) and gets that many
// bytes each time, written 1 MiB at a time from one buffer.
func serveRawTCP(lis net.Listener, token string) {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for {
		conn, err := lis.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			got := make([]byte, len(token))
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(conn, got); err != nil || subtle.ConstantTimeCompare(got, []byte(token)) != 1 {
				return
			}
			conn.SetReadDeadline(time.Time{})
			var req [8]byte
			for {
				if _, err := io.ReadFull(conn, req[:]); err != nil {
					return
				}
				n := binary.LittleEndian.Uint64(req[:])
				if n > 1<<34 {
					return
				}
				for sent := uint64(0); sent < n; {
					m := min(uint64(len(buf)), n-sent)
					if _, err := conn.Write(buf[:m]); err != nil {
						return
					}
					sent += m
				}
			}
		}()
	}
}

// echoClient is this process's side of the baselines.
type echoClient struct {
	proc *child
	cc   *grpc.ClientConn
	// tcp is the echo process's plain TCP address; token its token.
	tcp, token string
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
	tcp, err := field(line, "tcp")
	if err != nil {
		cc.Close()
		proc.stop()
		return nil, err
	}
	r.echo = &echoClient{proc: proc, cc: cc, tcp: tcp, token: token}
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
		{name: tcpLoopbackGigabytes, unit: UnitGB, per: per,
			note: fmt.Sprintf("%d MiB over one plain TCP connection from the echo process, read 1 MiB at a time (no gRPC)", sz.transfer>>20),
			setup: func(ctx context.Context, r *runner) (op, func(), error) {
				e, err := r.echoServer(ctx)
				if err != nil {
					return nil, nil, err
				}
				var d net.Dialer
				conn, err := d.DialContext(ctx, "tcp", e.tcp)
				if err != nil {
					return nil, nil, err
				}
				if _, err := conn.Write([]byte(e.token)); err != nil {
					conn.Close()
					return nil, nil, err
				}
				size := r.sizes.transfer
				buf := make([]byte, 1<<20)
				return func(context.Context, *stopwatch) error {
					var req [8]byte
					binary.LittleEndian.PutUint64(req[:], uint64(size))
					if _, err := conn.Write(req[:]); err != nil {
						return err
					}
					for got := 0; got < size; {
						n, err := conn.Read(buf[:min(len(buf), size-got)])
						if err != nil {
							return fmt.Errorf("tcp loopback: after %d of %d bytes: %w", got, size, err)
						}
						got += n
					}
					return nil
				}, func() { conn.Close() }, nil
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
