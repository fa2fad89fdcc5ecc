package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	icache "github.com/goray/goray/internal/cache"
	"github.com/goray/goray/internal/codec"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	ifiles "github.com/goray/goray/internal/files"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// ProtocolVersion is the ClientService protocol this gateway speaks.
const ProtocolVersion = 1

// Bounds.
const (
	// ChunkSize is the largest chunk a Get message carries (clients are told
	// to send Put chunks no larger).
	ChunkSize = 1 << 20
	// MaxObjectSize bounds a value a client puts.
	MaxObjectSize = 1 << 30
	// maxArgs bounds the arguments of one call, maxRefs the refs of one Wait
	// or Release.
	maxArgs = 256
	maxRefs = 10000
	// deploymentTTL is how long the gateway trusts its view of a namespace's
	// deployment before asking the head again (a redeploy shows within it).
	deploymentTTL = 2 * time.Second
	headTimeout   = 10 * time.Second
)

// Config configures a Gateway.
type Config struct {
	// HeadAddress is the address of `raylet --head` (its head and its node).
	HeadAddress string
	// Token is the cluster token ("" with auth off).
	Token string
	// Version is reported by Handshake.
	Version string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Gateway is the ClientService. Make one with New; Close it.
type Gateway struct {
	pb.UnimplementedClientServiceServer
	cfg    Config
	log    *slog.Logger
	conn   *rpc.HeadConn
	head   *rpc.HeadClient
	deploy pb.DeployServiceClient

	mu     sync.Mutex
	ns     map[string]*namespace
	closed bool
	// retiring closes the cores of namespaces deployed again; Close waits.
	retiring sync.WaitGroup
	// fc is the file store's client (files.go), made on first use.
	fc *ifiles.Client // guarded by mu
}

// namespace is the gateway's state of one deployed namespace.
type namespace struct {
	dep     *pb.Deployment
	core    *core.Core
	checked time.Time

	// held are the refs clients hold: the gateway keeps each object until
	// a client releases it (Release) or the namespace is deployed again.
	mu   sync.Mutex
	held map[ids.ObjectID]core.Ref // guarded by mu
	// caches are the caches clients used, opened on first use (cache.go).
	caches map[string]*icache.Client // guarded by mu
	// opening serializes creating and opening caches, so that no two
	// handles of a new shard are made at once (cache.go).
	opening sync.Mutex
}

// hold keeps ref for clients and returns the clients' ref to it.
func (n *namespace) hold(ns string, ref core.Ref) *pb.ClientRef {
	if err := ref.Usable(); err != nil {
		// A call that could not be made: the client still gets a ref of
		// its own, whose Get returns the error.
		ref = n.core.FailedRef(err)
	}
	info := ref.Shared()
	n.mu.Lock()
	if n.held == nil {
		n.held = map[ids.ObjectID]core.Ref{}
	}
	n.held[info.ID] = ref
	n.mu.Unlock()
	return clientRef(ns, info)
}

// lookup is the held ref of object id.
func (n *namespace) lookup(id ids.ObjectID) (core.Ref, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.held[id]
	return r, ok
}

// release drops the held ref of object id; false when none was held.
func (n *namespace) release(id ids.ObjectID) bool {
	n.mu.Lock()
	r, ok := n.held[id]
	delete(n.held, id)
	n.mu.Unlock()
	if ok {
		r.Release()
	}
	return ok
}

var _ pb.ClientServiceServer = (*Gateway)(nil)

// New makes a Gateway; it connects to the head lazily.
func New(cfg Config) (*Gateway, error) {
	if cfg.HeadAddress == "" {
		return nil, errors.New("gateway: Config.HeadAddress is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cc, err := rpc.DialHead(cfg.HeadAddress, cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return &Gateway{
		cfg: cfg, log: cfg.Logger.With("component", "gateway"), conn: cc,
		head: rpc.NewHeadClient(cc), deploy: pb.NewDeployServiceClient(cc),
		ns: map[string]*namespace{},
	}, nil
}

// Register registers the ClientService on g.
func (g *Gateway) Register(s *grpc.Server) { pb.RegisterClientServiceServer(s, g) }

// Close stops every namespace's core (their refs become unknown) and the
// connection to the head.
func (g *Gateway) Close() {
	g.mu.Lock()
	g.closed = true
	all := g.ns
	g.ns = map[string]*namespace{}
	g.mu.Unlock()
	for _, n := range all {
		n.closeCaches()
		n.core.Close()
	}
	g.retiring.Wait()
	g.closeFiles()
	g.conn.Close()
}

// namespace returns the state of a deployed namespace, attaching a core to
// its job on first use and when it was deployed again.
func (g *Gateway) namespace(ctx context.Context, name string) (*namespace, error) {
	if name == "" {
		return nil, errs.New(errs.KindInvalidArgument, "", "no namespace given: name the namespace a binary was deployed to (`goray deploy ./bin --namespace NAME`)")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errs.New(errs.KindShuttingDown, "", "the gateway is shutting down")
	}
	n := g.ns[name]
	if n != nil && time.Since(n.checked) < deploymentTTL {
		return n, nil
	}
	hctx, cancel := context.WithTimeout(ctx, headTimeout)
	defer cancel()
	resp, err := g.deploy.ListDeployments(hctx, &pb.ListDeploymentsRequest{Namespace: name})
	if err != nil {
		return nil, fmt.Errorf("look up namespace %q: %w", name, errs.FromStatus(err))
	}
	if len(resp.GetDeployments()) == 0 {
		return nil, errs.New(errs.KindNotFound, name, "namespace %q has no deployed binary: deploy one with `goray deploy ./bin --namespace %s`", name, name)
	}
	dep := resp.GetDeployments()[0]
	if n != nil && bytes.Equal(n.dep.GetJobId(), dep.GetJobId()) {
		n.checked = time.Now()
		n.dep = dep
		return n, nil
	}
	job, err := ids.ParseJobID(dep.GetJobId())
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", name, err)
	}
	c, err := core.Attach(ctx, core.AttachOptions{Address: g.cfg.HeadAddress, Token: g.cfg.Token, Job: job, Namespace: name, Logger: g.log})
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", name, err)
	}
	if n != nil {
		// Deployed again: the old job is finished, and so are its refs.
		old, oldNS := n.core, n
		g.retiring.Go(func() { oldNS.closeCaches(); old.Close() })
	}
	n = &namespace{dep: dep, core: c, checked: time.Now()}
	g.ns[name] = n
	g.log.Info("namespace attached", "namespace", name, "job", job, "entrypoint", dep.GetEntrypoint())
	return n, nil
}

// ref resolves a client's ref to the object the gateway owns.
func (g *Gateway) ref(ctx context.Context, r *pb.ClientRef) (*namespace, core.Ref, error) {
	if r == nil {
		return nil, core.Ref{}, errs.New(errs.KindInvalidArgument, "", "no ref given")
	}
	id, err := ids.ParseObjectID(r.GetObjectId())
	if err != nil {
		return nil, core.Ref{}, errs.New(errs.KindInvalidArgument, "", "malformed ref: %v", err)
	}
	n, err := g.namespace(ctx, r.GetNamespace())
	if err != nil {
		return nil, core.Ref{}, err
	}
	info, ok := n.lookup(id)
	if !ok {
		return nil, core.Ref{}, errs.New(errs.KindNotFound, "", "object %s is not held in namespace %q: it was released, its namespace was deployed again, or it was never made", id, r.GetNamespace())
	}
	return n, info, nil
}

func clientRef(ns string, r core.RefInfo) *pb.ClientRef {
	return &pb.ClientRef{Namespace: ns, ObjectId: r.ID[:]}
}

// Handshake checks the protocol version and describes the cluster.
func (g *Gateway) Handshake(ctx context.Context, req *pb.HandshakeRequest) (*pb.HandshakeResponse, error) {
	switch v := req.GetProtocolVersion(); {
	case v == 0:
		return nil, errs.New(errs.KindInvalidArgument, "", "Handshake: set protocol_version (this server speaks %d)", ProtocolVersion)
	case v > ProtocolVersion:
		return nil, status.Errorf(codes.FailedPrecondition, "Handshake: client speaks protocol %d, this server only %d: upgrade the cluster or use an older client", v, ProtocolVersion)
	}
	hctx, cancel := context.WithTimeout(ctx, headTimeout)
	defer cancel()
	nodes, err := g.head.ListNodes(hctx, &pb.ListNodesRequest{})
	if err != nil {
		return nil, errs.FromStatus(err)
	}
	deps, err := g.deploy.ListDeployments(hctx, &pb.ListDeploymentsRequest{})
	if err != nil {
		return nil, errs.FromStatus(err)
	}
	resp := &pb.HandshakeResponse{ProtocolVersion: ProtocolVersion, ServerVersion: g.cfg.Version,
		ChunkSize: ChunkSize, MaxObjectSize: MaxObjectSize}
	for _, n := range nodes.GetNodes() {
		if n.GetAlive() {
			resp.NodeCount++
		}
	}
	for _, d := range deps.GetDeployments() {
		resp.Namespaces = append(resp.Namespaces, d.GetNamespace())
	}
	g.log.Debug("client handshake", "client", req.GetClientName(), "protocol", req.GetProtocolVersion())
	return resp, nil
}

// Put stores a streamed value.
func (g *Gateway) Put(stream pb.ClientService_PutServer) error {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return errs.New(errs.KindInvalidArgument, "", "Put: empty stream, want a first message with the namespace, encoding and size")
	}
	if err != nil {
		return err
	}
	size := first.GetSize()
	if size > MaxObjectSize {
		return errs.New(errs.KindInvalidArgument, "", "Put: value of %d bytes exceeds the limit of %d bytes", size, MaxObjectSize)
	}
	p := &pb.Payload{Encoding: first.GetEncoding(), TypeUrl: first.GetTypeUrl()}
	if err := checkEncoding(p); err != nil {
		return err
	}
	n, err := g.namespace(stream.Context(), first.GetNamespace())
	if err != nil {
		return err
	}
	// The buffer grows with the bytes that arrive, never to the size a
	// stream declares up front.
	data := make([]byte, 0, min(size, ChunkSize))
	for msg := first; ; {
		if uint64(len(data))+uint64(len(msg.GetChunk())) > size {
			return errs.New(errs.KindInvalidArgument, "", "Put: received more than the declared %d bytes", size)
		}
		data = append(data, msg.GetChunk()...)
		msg, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if uint64(len(data)) != size {
		return errs.New(errs.KindInvalidArgument, "", "Put: received %d bytes, want the declared %d", len(data), size)
	}
	p.Data = data
	if err := checkPayload(p); err != nil {
		return err
	}
	ref, err := n.core.PutPayloadReplicated(stream.Context(), p, int(min(first.GetReplicas(), core.MaxReplicas+1)))
	if err != nil {
		return err
	}
	copies := n.core.Replicas(ref)
	return stream.SendAndClose(&pb.PutResponse{Ref: n.hold(first.GetNamespace(), ref), Replicas: uint32(copies)})
}

// Get streams an object's value once it exists.
func (g *Gateway) Get(req *pb.GetRequest, stream pb.ClientService_GetServer) error {
	ctx := stream.Context()
	n, ref, err := g.ref(ctx, req.GetRef())
	if err != nil {
		return err
	}
	p, err := n.core.GetPayload(ctx, ref.Info())
	if err != nil {
		return err
	}
	data := p.GetData()
	first := &pb.GetResponse{Encoding: p.GetEncoding(), TypeUrl: p.GetTypeUrl(), Size: uint64(len(data))}
	end := min(len(data), ChunkSize)
	first.Chunk = data[:end]
	if err := stream.Send(first); err != nil {
		return err
	}
	for off := end; off < len(data); off += ChunkSize {
		if err := stream.Send(&pb.GetResponse{Chunk: data[off:min(len(data), off+ChunkSize)]}); err != nil {
			return err
		}
	}
	return nil
}

// Wait returns once num_returns refs are ready, or the timeout passes.
func (g *Gateway) Wait(ctx context.Context, req *pb.WaitRequest) (*pb.WaitResponse, error) {
	refs := req.GetRefs()
	if len(refs) > maxRefs {
		return nil, errs.New(errs.KindInvalidArgument, "", "Wait: %d refs, at most %d allowed", len(refs), maxRefs)
	}
	want := int(req.GetNumReturns())
	if want == 0 || want > len(refs) {
		want = len(refs)
	}
	type owned struct {
		c   *core.Core
		ref core.RefInfo
	}
	all := make([]owned, len(refs))
	for i, r := range refs {
		n, info, err := g.ref(ctx, r)
		if err != nil {
			return nil, err
		}
		all[i] = owned{n.core, info.Info()}
	}
	wctx, cancel := context.WithCancel(ctx)
	if ms := req.GetTimeoutMs(); ms > 0 {
		wctx, cancel = context.WithTimeout(ctx, time.Duration(min(ms, math.MaxInt64/uint64(time.Millisecond)))*time.Millisecond)
	}
	defer cancel()
	ready, err := core.WaitN(wctx, len(all), want, func(i int) (*core.Core, core.RefInfo) { return all[i].c, all[i].ref })
	if err != nil && ctx.Err() != nil {
		return nil, status.FromContextError(err).Err() // the client went away
	}
	// Past timeout_ms: the split at that moment.
	resp := &pb.WaitResponse{}
	for i, r := range refs {
		if ready[i] {
			resp.Ready = append(resp.Ready, r)
		} else {
			resp.NotReady = append(resp.NotReady, r)
		}
	}
	return resp, nil
}

// Release drops the refs.
func (g *Gateway) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	if len(req.GetRefs()) > maxRefs {
		return nil, errs.New(errs.KindInvalidArgument, "", "Release: %d refs, at most %d allowed", len(req.GetRefs()), maxRefs)
	}
	resp := &pb.ReleaseResponse{}
	for _, r := range req.GetRefs() {
		id, err := ids.ParseObjectID(r.GetObjectId())
		if err != nil {
			return nil, errs.New(errs.KindInvalidArgument, "", "Release: malformed ref: %v", err)
		}
		g.mu.Lock()
		n := g.ns[r.GetNamespace()]
		g.mu.Unlock()
		if n != nil && n.release(id) {
			resp.Released++
		}
	}
	return resp, nil
}

// GetNamedActor looks a live named actor up.
func (g *Gateway) GetNamedActor(ctx context.Context, req *pb.GetNamedActorRequest) (*pb.GetNamedActorResponse, error) {
	n, err := g.namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	h, err := g.actor(ctx, n, req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	info := &pb.NamedActorInfo{Namespace: req.GetNamespace(), Name: req.GetName(), TypeName: h.TypeName, ActorId: h.ID[:]}
	if t := actorType(n.dep, h.TypeName); t != nil {
		info.Methods = t.GetMethods()
	}
	return &pb.GetNamedActorResponse{Actor: info}, nil
}

func (g *Gateway) actor(ctx context.Context, n *namespace, ns, name string) (*core.ActorHandle, error) {
	if name == "" {
		return nil, errs.New(errs.KindInvalidArgument, "", "no actor name given")
	}
	h, err := n.core.GetActor(ctx, name, ns)
	if err != nil {
		return nil, err
	}
	return h, nil
}

func actorType(dep *pb.Deployment, name string) *pb.ActorTypeInfo {
	for _, t := range dep.GetRegistry().GetActorTypes() {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}

// CallActor calls a named actor's method and returns the result's ref.
func (g *Gateway) CallActor(ctx context.Context, req *pb.CallActorRequest) (*pb.CallActorResponse, error) {
	n, err := g.namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	h, err := g.actor(ctx, n, req.GetNamespace(), req.GetActorName())
	if err != nil {
		return nil, err
	}
	qual := h.TypeName + "." + req.GetMethod()
	if t := actorType(n.dep, h.TypeName); t != nil {
		var m *pb.MethodInfo
		names := make([]string, 0, len(t.GetMethods()))
		for _, x := range t.GetMethods() {
			names = append(names, x.GetName())
			if x.GetName() == req.GetMethod() {
				m = x
			}
		}
		if m == nil {
			return nil, errs.New(errs.KindNotFound, qual, "actor %q (type %q) has no method %q (methods: %v)", req.GetActorName(), h.TypeName, req.GetMethod(), names)
		}
		if len(m.GetArgTypes()) != len(req.GetArgs()) {
			return nil, errs.New(errs.KindInvalidArgument, qual, "%s takes %d argument(s) %v, got %d", qual, len(m.GetArgTypes()), m.GetArgTypes(), len(req.GetArgs()))
		}
	}
	args, err := g.args(ctx, n, req.GetArgs())
	if err != nil {
		return nil, err
	}
	// The ref outlives this RPC (the client gets it later): the call is
	// not governed by the RPC's context.
	ref := n.core.CallActor(context.WithoutCancel(ctx), h, req.GetMethod(), args)
	return &pb.CallActorResponse{Ref: n.hold(req.GetNamespace(), ref)}, nil
}

// CallFunction submits a registered function of the namespace as a task.
func (g *Gateway) CallFunction(ctx context.Context, req *pb.CallFunctionRequest) (*pb.CallFunctionResponse, error) {
	n, err := g.namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	name := req.GetFunction()
	if fns := n.dep.GetRegistry().GetFunctions(); n.dep.GetRegistry() != nil {
		var f *pb.FunctionInfo
		for _, x := range fns {
			if x.GetName() == name {
				f = x
			}
		}
		if f == nil {
			return nil, errs.New(errs.KindNotFound, name, "function %q is not registered in namespace %q (ListNamespace lists what it offers)", name, req.GetNamespace())
		}
		if len(f.GetArgTypes()) != len(req.GetArgs()) {
			return nil, errs.New(errs.KindInvalidArgument, name, "%s takes %d argument(s) %v, got %d", name, len(f.GetArgTypes()), f.GetArgTypes(), len(req.GetArgs()))
		}
	}
	for r, v := range req.GetResources() {
		if r == "" || !(v >= 0) || math.IsInf(v, 0) {
			return nil, errs.New(errs.KindInvalidArgument, name, "resource %q has amount %v, want a finite amount ≥ 0", r, v)
		}
	}
	args, err := g.args(ctx, n, req.GetArgs())
	if err != nil {
		return nil, err
	}
	ref := n.core.SubmitTaskByName(context.WithoutCancel(ctx), name, args, core.TaskOptions{Resources: req.GetResources()})
	return &pb.CallFunctionResponse{Ref: n.hold(req.GetNamespace(), ref)}, nil
}

// args turns a client's arguments into call arguments.
func (g *Gateway) args(ctx context.Context, n *namespace, in []*pb.ClientArg) (core.Args, error) {
	var out core.Args
	if len(in) > maxArgs {
		return out, errs.New(errs.KindInvalidArgument, "", "%d arguments, at most %d allowed", len(in), maxArgs)
	}
	for i, a := range in {
		switch k := a.GetKind().(type) {
		case *pb.ClientArg_Value:
			if err := checkPayload(k.Value); err != nil {
				return out, errs.New(errs.KindInvalidArgument, "", "argument %d: %v", i+1, err)
			}
			if err := n.core.PayloadArg(ctx, k.Value, &out); err != nil {
				return out, err
			}
		case *pb.ClientArg_Ref:
			_, ref, err := g.ref(ctx, k.Ref)
			if err != nil {
				return out, fmt.Errorf("argument %d: %w", i+1, err)
			}
			out.Add(ref.Info().Arg(), ref)
		default:
			return out, errs.New(errs.KindInvalidArgument, "", "argument %d is empty: set a value or a ref", i+1)
		}
	}
	return out, nil
}

// ListNamespace lists what a namespace's deployed binary offers.
func (g *Gateway) ListNamespace(ctx context.Context, req *pb.ListNamespaceRequest) (*pb.ListNamespaceResponse, error) {
	n, err := g.namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	return &pb.ListNamespaceResponse{Namespace: req.GetNamespace(), Registry: n.dep.GetRegistry(), Entrypoint: n.dep.GetEntrypoint()}, nil
}

// checkEncoding rejects payloads whose encoding goray cannot read.
func checkEncoding(p *pb.Payload) error {
	switch p.GetEncoding() {
	case pb.Encoding_ENCODING_RAW, pb.Encoding_ENCODING_MSGPACK, pb.Encoding_ENCODING_JSON:
		return nil
	case pb.Encoding_ENCODING_PROTOBUF:
		if p.GetTypeUrl() == "" {
			return errs.New(errs.KindInvalidArgument, "", "a protobuf payload needs a type_url, e.g. \"type.googleapis.com/my.pkg.Message\"")
		}
		return nil
	case pb.Encoding_ENCODING_UNSPECIFIED:
		return errs.New(errs.KindInvalidArgument, "", "payload encoding is unspecified: want raw, protobuf, msgpack or json")
	default:
		return errs.New(errs.KindInvalidArgument, "", "unknown payload encoding %d: want raw, protobuf, msgpack or json", p.GetEncoding())
	}
}

// checkPayload rejects a payload that is not well formed for its encoding,
// so a client learns at once rather than from the worker.
func checkPayload(p *pb.Payload) error {
	if p == nil {
		return errs.New(errs.KindInvalidArgument, "", "no payload")
	}
	if err := checkEncoding(p); err != nil {
		return err
	}
	data := p.GetData()
	switch p.GetEncoding() {
	case pb.Encoding_ENCODING_JSON:
		if !json.Valid(data) {
			return errs.New(errs.KindInvalidArgument, "", "payload is not valid JSON")
		}
	case pb.Encoding_ENCODING_MSGPACK:
		// Iterative, bounded in depth, and trusting no declared size.
		if err := codec.CheckMsgpack(data, codec.MaxDepth); err != nil {
			return errs.New(errs.KindInvalidArgument, "", "payload is not one valid MessagePack value: %v", err)
		}
	case pb.Encoding_ENCODING_PROTOBUF:
		if err := checkProtoWire(data); err != nil {
			return errs.New(errs.KindInvalidArgument, "", "payload is not a valid protobuf message: %v", err)
		}
	}
	return nil
}

// checkProtoWire checks that b parses as protobuf wire format.
func checkProtoWire(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// ServerVersion is what Handshake reports as the server's version.
const ServerVersion = "0.1.0-dev"
