package gateway

import (
	"context"

	icache "github.com/goray/goray/internal/cache"
	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// The ClientService's cache RPCs: each names a cache of a deployed
// namespace, whose shards are actors of the namespace's job (every goray
// binary registers the shard type: this package imports internal/cache).
// The gateway opens a cache on first use with the namespace's core and
// keeps the client until the namespace is deployed again.

// closeCaches stops the namespace's cache clients.
func (n *namespace) closeCaches() {
	n.mu.Lock()
	all := n.caches
	n.caches = nil
	n.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// keep records cl as the client of its cache, or returns the one another
// request recorded first (and closes cl).
func (n *namespace) keep(cl *icache.Client) *icache.Client {
	name := cl.Config().Name
	n.mu.Lock()
	if n.caches == nil {
		n.caches = map[string]*icache.Client{}
	}
	if have := n.caches[name]; have != nil {
		n.mu.Unlock()
		cl.Close()
		return have
	}
	n.caches[name] = cl
	n.mu.Unlock()
	return cl
}

// cache is the client of cache name, if one is open.
func (n *namespace) cache(name string) *icache.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.caches[name]
}

func (g *Gateway) cacheClient(ctx context.Context, ref *pb.CacheRef) (*icache.Client, error) {
	if ref == nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "no cache given: set cache {namespace, name}")
	}
	if err := icache.CheckName(ref.GetName()); err != nil {
		return nil, err
	}
	n, err := g.namespace(ctx, ref.GetNamespace())
	if err != nil {
		return nil, err
	}
	if cl := n.cache(ref.GetName()); cl != nil {
		return cl, nil
	}
	n.opening.Lock()
	defer n.opening.Unlock()
	if cl := n.cache(ref.GetName()); cl != nil {
		return cl, nil
	}
	cl, err := icache.Open(ctx, n.core, ref.GetNamespace(), ref.GetName())
	if err != nil {
		return nil, err
	}
	return n.keep(cl), nil
}

func cacheValue(p *pb.Payload) (icache.Value, error) {
	if err := checkPayload(p); err != nil {
		return icache.Value{}, err
	}
	return icache.Value{Enc: int32(p.GetEncoding()), Data: p.GetData()}, nil
}

func payloadOf(v icache.Value) *pb.Payload {
	return &pb.Payload{Encoding: pb.Encoding(v.Enc), Data: v.Data}
}

func shardError(r icache.Reply) error {
	if r.Err != "" {
		return errs.New(errs.KindInvalidArgument, "", "cache: %s", r.Err)
	}
	return errs.New(errs.KindInternal, "", "cache: unexpected shard answer %d", r.Code)
}

// CacheCreate creates a cache in a deployed namespace.
func (g *Gateway) CacheCreate(ctx context.Context, req *pb.CacheCreateRequest) (*pb.CacheCreateResponse, error) {
	ref := req.GetCache()
	if ref == nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "no cache given: set cache {namespace, name}")
	}
	if err := icache.CheckName(ref.GetName()); err != nil {
		return nil, err
	}
	const maxInt = int64(^uint(0) >> 1)
	if req.GetMaxEntries() > uint64(maxInt) || req.GetMaxBytes() > uint64(maxInt) || req.GetTtlMs() > uint64(maxInt) {
		return nil, errs.New(errs.KindInvalidArgument, ref.GetName(), "cache %q: capacity or TTL out of range", ref.GetName())
	}
	n, err := g.namespace(ctx, ref.GetNamespace())
	if err != nil {
		return nil, err
	}
	cfg := icache.Config{Name: ref.GetName(), Shards: int(req.GetShards()), MaxEntries: int(req.GetMaxEntries()),
		MaxBytes: int64(req.GetMaxBytes()), TTLms: int64(req.GetTtlMs())}
	if cfg.Shards == 0 {
		nodes, err := g.head.ListNodes(ctx, &pb.ListNodesRequest{})
		if err != nil {
			return nil, errs.FromStatus(err)
		}
		for _, x := range nodes.GetNodes() {
			if x.GetAlive() {
				cfg.Shards++
			}
		}
		cfg.Shards = max(cfg.Shards, 1)
	}
	n.opening.Lock()
	defer n.opening.Unlock()
	cl, err := icache.Create(ctx, n.core, ref.GetNamespace(), cfg, icache.Placement{Detached: req.GetDetached()})
	if err != nil {
		return nil, err
	}
	cl = n.keep(cl)
	return &pb.CacheCreateResponse{Shards: uint32(cl.Config().Shards)}, nil
}

// CacheGet reads a key; a lost shard is a miss.
func (g *Gateway) CacheGet(ctx context.Context, req *pb.CacheGetRequest) (*pb.CacheGetResponse, error) {
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	r, err := cl.Do(ctx, icache.Request{Op: icache.OpGet, Key: req.GetKey()})
	switch {
	case icache.IsLost(err):
		return &pb.CacheGetResponse{}, nil
	case err != nil:
		return nil, err
	case r.Code == icache.CodeHit:
		return &pb.CacheGetResponse{Found: true, Value: payloadOf(r.Val)}, nil
	case r.Code == icache.CodeMiss:
		return &pb.CacheGetResponse{}, nil
	}
	return nil, shardError(r)
}

// CacheSet stores a value; a set to a lost shard is dropped.
func (g *Gateway) CacheSet(ctx context.Context, req *pb.CacheSetRequest) (*pb.CacheSetResponse, error) {
	v, err := cacheValue(req.GetValue())
	if err != nil {
		return nil, err
	}
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	r, err := cl.Do(ctx, icache.Request{Op: icache.OpSet, Key: req.GetKey(), Val: v, TTLms: req.GetTtlMs()})
	switch {
	case icache.IsLost(err):
		return &pb.CacheSetResponse{}, nil
	case err != nil:
		return nil, err
	case r.Code == icache.CodeOK:
		return &pb.CacheSetResponse{}, nil
	}
	return nil, shardError(r)
}

// CacheDelete removes a key.
func (g *Gateway) CacheDelete(ctx context.Context, req *pb.CacheDeleteRequest) (*pb.CacheDeleteResponse, error) {
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	r, err := cl.Do(ctx, icache.Request{Op: icache.OpDelete, Key: req.GetKey()})
	switch {
	case icache.IsLost(err):
		return &pb.CacheDeleteResponse{}, nil
	case err != nil:
		return nil, err
	}
	return &pb.CacheDeleteResponse{Deleted: r.Int == 1}, nil
}

// CacheIncrement adds to an integer.
func (g *Gateway) CacheIncrement(ctx context.Context, req *pb.CacheIncrementRequest) (*pb.CacheIncrementResponse, error) {
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	r, err := cl.Do(ctx, icache.Request{Op: icache.OpIncr, Key: req.GetKey(), Delta: req.GetDelta(), TTLms: req.GetTtlMs()})
	switch {
	case err != nil:
		return nil, err
	case r.Code == icache.CodeHit:
		return &pb.CacheIncrementResponse{Value: r.Int}, nil
	}
	return nil, shardError(r)
}

// CacheCompareAndSwap swaps a value in when the key holds the expected one.
func (g *Gateway) CacheCompareAndSwap(ctx context.Context, req *pb.CacheCompareAndSwapRequest) (*pb.CacheCompareAndSwapResponse, error) {
	v, err := cacheValue(req.GetValue())
	if err != nil {
		return nil, err
	}
	op := icache.Request{Op: icache.OpCAS, Key: req.GetKey(), Val: v, TTLms: req.GetTtlMs(), Absent: req.GetExpected() == nil}
	if !op.Absent {
		if op.Old, err = cacheValue(req.GetExpected()); err != nil {
			return nil, err
		}
	}
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	r, err := cl.Do(ctx, op)
	switch {
	case err != nil:
		return nil, err
	case r.Code == icache.CodeOK:
		return &pb.CacheCompareAndSwapResponse{Swapped: true}, nil
	case r.Code == icache.CodeNotSwapped:
		resp := &pb.CacheCompareAndSwapResponse{Found: r.Int == 1}
		if resp.Found {
			resp.Current = payloadOf(r.Val)
		}
		return resp, nil
	}
	return nil, shardError(r)
}

// CacheAcquire returns a value or a compute lease; with another caller
// computing, it waits for that caller's value.
func (g *Gateway) CacheAcquire(ctx context.Context, req *pb.CacheAcquireRequest) (*pb.CacheAcquireResponse, error) {
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	leaseMs := int64(min(req.GetLeaseMs(), uint64(icache.MaxLease.Milliseconds())))
	v, hit, comp, err := cl.Acquire(ctx, req.GetKey(), leaseMs)
	switch {
	case icache.IsLost(err):
		return &pb.CacheAcquireResponse{}, nil
	case err != nil:
		return nil, err
	case hit:
		return &pb.CacheAcquireResponse{Found: true, Value: payloadOf(v)}, nil
	}
	return &pb.CacheAcquireResponse{Lease: comp.Lease}, nil
}

// CacheFulfill stores a computed value.
func (g *Gateway) CacheFulfill(ctx context.Context, req *pb.CacheFulfillRequest) (*pb.CacheFulfillResponse, error) {
	v, err := cacheValue(req.GetValue())
	if err != nil {
		return nil, err
	}
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	if err := cl.Fulfill(ctx, icache.Computation{Key: req.GetKey(), Lease: req.GetLease()}, v, req.GetTtlMs()); err != nil && !icache.IsLost(err) {
		return nil, err
	}
	return &pb.CacheFulfillResponse{}, nil
}

// CacheAbandon gives a lease up.
func (g *Gateway) CacheAbandon(ctx context.Context, req *pb.CacheAbandonRequest) (*pb.CacheAbandonResponse, error) {
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	if err := cl.Abandon(ctx, icache.Computation{Key: req.GetKey(), Lease: req.GetLease()}); err != nil && !icache.IsLost(err) {
		return nil, err
	}
	return &pb.CacheAbandonResponse{}, nil
}

// CacheStats returns the cache's counters.
func (g *Gateway) CacheStats(ctx context.Context, req *pb.CacheStatsRequest) (*pb.CacheStatsResponse, error) {
	cl, err := g.cacheClient(ctx, req.GetCache())
	if err != nil {
		return nil, err
	}
	per, total, err := cl.Stats(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.CacheStatsResponse{Total: statsOf(total)}
	for _, s := range per {
		resp.Shards = append(resp.Shards, statsOf(s))
	}
	return resp, nil
}

func statsOf(s icache.Stats) *pb.CacheShardStats {
	return &pb.CacheShardStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions, Expirations: s.Expirations,
		Computes: s.Computes, Entries: s.Entries, Bytes: s.Bytes, NodeId: s.Node, Unavailable: uint32(s.Unavailable)}
}
