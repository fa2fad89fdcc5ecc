package scheduler

import (
	"context"
	"log/slog"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rayletClient is what the head's managers ask of raylets, by address. The
// production one (rayletPool) calls their NodeService and BundleService over
// cached connections; unit tests use fakes. Calls block until ctx ends;
// errors are the raylet's goray errors (*errs.Error).
type rayletClient interface {
	StartActor(ctx context.Context, addr string, spec *pb.ActorSpec, incarnation uint32) (*pb.StartActorResponse, error)
	StopActor(ctx context.Context, addr string, aid ids.ActorID) error
	StopJob(ctx context.Context, addr string, job ids.JobID) error
	PrepareBundle(ctx context.Context, addr string, req *pb.PrepareBundleRequest) error
	CommitBundle(ctx context.Context, addr string, req *pb.CommitBundleRequest) error
	ReturnBundle(ctx context.Context, addr string, req *pb.ReturnBundleRequest) error
}

// rayletPool is the rayletClient over gRPC. Any goroutine calls it; mu
// guards the connection cache and is never held across a call.
type rayletPool struct {
	token string
	log   *slog.Logger
	// epoch and leads: the head's term when it is one of several (set
	// before the pool is used; see Config.Epoch).
	epoch int64
	leads func() bool

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // guarded by mu; by raylet address
	closed bool                        // guarded by mu
}

var _ rayletClient = (*rayletPool)(nil)

func newRayletPool(token string, log *slog.Logger) *rayletPool {
	return &rayletPool{token: token, log: log, conns: make(map[string]*grpc.ClientConn)}
}

// client is a NodeService client for the raylet at addr, over a cached
// connection.
func (p *rayletPool) client(addr string) (*rpc.NodeClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errs.New(errs.KindShuttingDown, "", "the head is shutting down")
	}
	cc, ok := p.conns[addr]
	if !ok {
		var err error
		if cc, err = rpc.DialWith(addr, p.token, grpc.WithChainUnaryInterceptor(p.fence)); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		p.conns[addr] = cc
	}
	return rpc.NewNodeClient(cc), nil
}

// fence sends the head's epoch with every command, and no command once
// this head's term is not surely held.
func (p *rayletPool) fence(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if p.leads != nil && !p.leads() {
		return errs.New(errs.KindUnavailable, "", "this head no longer leads the cluster: its command %s was not sent", method)
	}
	return invoker(rpc.WithEpoch(ctx, p.epoch), method, req, reply, cc, opts...)
}

func (p *rayletPool) StartActor(ctx context.Context, addr string, spec *pb.ActorSpec, incarnation uint32) (*pb.StartActorResponse, error) {
	c, err := p.client(addr)
	if err != nil {
		return nil, err
	}
	return c.StartActor(ctx, &pb.StartActorRequest{Spec: spec, Incarnation: incarnation})
}

func (p *rayletPool) StopActor(ctx context.Context, addr string, aid ids.ActorID) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.StopActor(ctx, &pb.StopActorRequest{ActorId: aid[:]})
	return err
}

func (p *rayletPool) StopJob(ctx context.Context, addr string, job ids.JobID) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.StopJob(ctx, &pb.StopJobRequest{JobId: job[:]})
	return err
}

func (p *rayletPool) PrepareBundle(ctx context.Context, addr string, req *pb.PrepareBundleRequest) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.PrepareBundle(ctx, req)
	return err
}

func (p *rayletPool) CommitBundle(ctx context.Context, addr string, req *pb.CommitBundleRequest) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.CommitBundle(ctx, req)
	return err
}

func (p *rayletPool) ReturnBundle(ctx context.Context, addr string, req *pb.ReturnBundleRequest) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.ReturnBundle(ctx, req)
	return err
}

// drop closes the cached connection to addr, if any.
func (p *rayletPool) drop(addr string) {
	p.mu.Lock()
	cc, ok := p.conns[addr]
	delete(p.conns, addr)
	p.mu.Unlock()
	if ok {
		if err := cc.Close(); err != nil {
			p.log.Debug("close raylet connection", "address", addr, "err", err)
		}
	}
}

// close closes every connection; later calls fail with a shutting-down error.
func (p *rayletPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, cc := range p.conns {
		if err := cc.Close(); err != nil {
			p.log.Debug("close raylet connection", "address", addr, "err", err)
		}
		delete(p.conns, addr)
	}
}
