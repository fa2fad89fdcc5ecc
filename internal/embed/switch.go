package embed

import (
	"context"
	"strconv"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/rpc"
)

// headSwitch serves the head's services of whichever term this process
// leads, and refuses them while it is a standby: a head's gRPC server is
// started once, but its scheduler.Server lives for one leadership term.
//
// Each service is registered once with handlers that look the current
// term's implementation up on every call (set by the elector's goroutine,
// read by every handler: an atomic pointer). A call that finds no term, or a
// term whose lease is not surely held, fails with codes.Unavailable and the
// leader's address in the rpc.LeaderTrailer trailer, so clients
// (rpc.HeadConn) go there.
type headSwitch struct {
	// impls maps a service name to its implementation in the current term;
	// nil between terms.
	impls atomic.Pointer[map[string]any]
	// epoch is the current term's, sent in every served call's response
	// header (rpc.EpochKey) so raylets learn it.
	epoch atomic.Int64
	// leader says where the leader is ("" unknown) and whether it is this
	// process in a valid term.
	leader func() (addr string, self bool)
}

// termRegistrar collects the services a term's parts register.
type termRegistrar map[string]any

func (r termRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	r[desc.ServiceName] = impl
}

// register registers desc's service on srv, dispatching to the current
// term's implementation.
func (s *headSwitch) register(srv *grpc.Server, desc *grpc.ServiceDesc) {
	d := *desc
	name := desc.ServiceName
	d.HandlerType = (*any)(nil)
	d.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		h := m.Handler
		d.Methods[i] = grpc.MethodDesc{MethodName: m.MethodName, Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			impl, err := s.current(ctx, name)
			if err != nil {
				return nil, err
			}
			return h(impl, ctx, dec, ic)
		}}
	}
	d.Streams = make([]grpc.StreamDesc, len(desc.Streams))
	for i, st := range desc.Streams {
		h := st.Handler
		st.Handler = func(_ any, stream grpc.ServerStream) error {
			impl, err := s.current(stream.Context(), name)
			if err != nil {
				return err
			}
			return h(impl, stream)
		}
		d.Streams[i] = st
	}
	srv.RegisterService(&d, struct{}{})
}

// current is the term's implementation of service name, or the error that
// sends the caller to the leader.
func (s *headSwitch) current(ctx context.Context, name string) (any, error) {
	addr, self := s.leader()
	if m := s.impls.Load(); m != nil && self {
		if impl, ok := (*m)[name]; ok {
			_ = grpc.SetHeader(ctx, metadata.Pairs(rpc.EpochKey, strconv.FormatInt(s.epoch.Load(), 10)))
			return impl, nil
		}
	}
	if addr != "" && !self {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(rpc.LeaderTrailer, addr))
		return nil, status.Errorf(codes.Unavailable, "this goray head is a standby; the leader is %s", addr)
	}
	return nil, status.Error(codes.Unavailable, "no goray head leads right now (an election is under way); retry shortly")
}

// services are the descriptors of what the switch serves: every service a
// term registers.
func collect(register func(grpc.ServiceRegistrar)) (termRegistrar, []*grpc.ServiceDesc) {
	var descs []*grpc.ServiceDesc
	r := descRecorder{impls: termRegistrar{}, descs: &descs}
	register(r)
	return r.impls, descs
}

type descRecorder struct {
	impls termRegistrar
	descs *[]*grpc.ServiceDesc
}

func (r descRecorder) RegisterService(desc *grpc.ServiceDesc, impl any) {
	r.impls[desc.ServiceName] = impl
	*r.descs = append(*r.descs, desc)
}
