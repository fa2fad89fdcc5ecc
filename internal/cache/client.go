package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Bounds of a Client.
const (
	// MaxShards bounds a cache's shards.
	MaxShards = 4096
	// MaxKeyLen bounds a key.
	MaxKeyLen = 4096
	// probeInterval is how often a Client asks a shard it found lost
	// whether it serves again; probeTimeout bounds one such ask.
	probeInterval = 200 * time.Millisecond
	probeTimeout  = 2 * time.Second
)

// ShardName is the actor name of shard i of cache name.
func ShardName(name string, i int) string { return fmt.Sprintf("goray.cache/%s/%d", name, i) }

// CheckName checks a cache's name.
func CheckName(name string) error {
	if name == "" || len(name) > 200 || strings.ContainsAny(name, "/\x00") {
		return errs.New(errs.KindInvalidArgument, name, "cache name %q: want 1 to 200 bytes without '/' or NUL", name)
	}
	return nil
}

// CheckKey checks a key.
func CheckKey(key string) error {
	if len(key) > MaxKeyLen {
		return errs.New(errs.KindInvalidArgument, "", "cache key of %d bytes: at most %d allowed", len(key), MaxKeyLen)
	}
	return nil
}

// errLost is the error of an operation on a shard that is lost with its
// node or process and not yet back; the SDK turns it into a miss.
func errLost(name string, i int) error {
	return errs.New(errs.KindUnavailable, ShardName(name, i), "cache %q: shard %d is lost (its node or process died) and not yet restarted", name, i)
}

// errLostBy is errLost for the call that found the shard gone, with what
// that call got.
func errLostBy(name string, i int, cause error) error {
	return errs.New(errs.KindUnavailable, ShardName(name, i), "cache %q: shard %d is lost (its node or process died): %v", name, i, cause)
}

// IsLost reports whether err is the error of a lost shard.
func IsLost(err error) bool { return errors.Is(err, errs.ErrUnavailable) }

// lostErr reports whether a call's error means the shard's process or node
// is gone (rather than that the request was bad).
func lostErr(err error) bool {
	return errors.Is(err, errs.ErrActorDied) || errors.Is(err, errs.ErrWorkerCrashed) ||
		errors.Is(err, errs.ErrNodeDied) || errors.Is(err, errs.ErrUnavailable) || errors.Is(err, errs.ErrOwnerDied)
}

// Placement says where a new cache's shards go.
type Placement struct {
	// Nodes are the node IDs (hex) to place shards on, round robin, with
	// soft affinity (a shard whose node is gone restarts elsewhere).
	// Empty: the cluster's alive nodes.
	Nodes []string
	// Detached shards outlive the job that made them, until killed.
	Detached bool
}

// shardRef is one shard as a Client sees it.
type shardRef struct {
	h    *core.ActorHandle
	lost atomic.Bool // set on a call that found it gone; cleared by the prober
}

// Client is a cache as one process uses it: the ring and the shards'
// handles over one core. Safe for concurrent use. Close it: it owns a
// goroutine that probes lost shards.
type Client struct {
	c      *core.Core
	ns     string
	cfg    Config
	ring   *ring
	shards []*shardRef

	probe chan struct{} // size 1: wakes the prober
	// ctx ends when the client is closed: the prober's pings use it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Create creates cache cfg.Name in namespace ns (or opens it when it exists
// with the same configuration): cfg.Shards shard actors placed over the
// nodes.
func Create(ctx context.Context, c *core.Core, ns string, cfg Config, pl Placement) (*Client, error) {
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Shards < 1 || cfg.Shards > MaxShards {
		return nil, errs.New(errs.KindInvalidArgument, cfg.Name, "cache %q: %d shards, want 1 to %d", cfg.Name, cfg.Shards, MaxShards)
	}
	if cfg.MaxEntries < 0 || cfg.MaxBytes < 0 || cfg.TTLms < 0 {
		return nil, errs.New(errs.KindInvalidArgument, cfg.Name, "cache %q: capacity and TTL must not be negative", cfg.Name)
	}
	nodes := pl.Nodes
	if len(nodes) == 0 {
		resp, err := c.Head().ListNodes(ctx, &pb.ListNodesRequest{})
		if err != nil {
			return nil, fmt.Errorf("cache %q: list nodes: %w", cfg.Name, errs.FromStatus(err))
		}
		for _, n := range resp.GetNodes() {
			if n.GetAlive() {
				nodes = append(nodes, hex.EncodeToString(n.GetNodeId()))
			}
		}
	}
	cl := newClient(c, ns, cfg)
	for i := range cfg.Shards {
		o := core.ActorOptions{Name: ShardName(cfg.Name, i), Namespace: ns, GetIfExists: true,
			MaxRestarts: -1, MaxConcurrency: ShardConcurrency, Detached: pl.Detached}
		if len(nodes) > 0 {
			id, err := hex.DecodeString(nodes[i%len(nodes)])
			if err != nil {
				return nil, errs.New(errs.KindInvalidArgument, cfg.Name, "cache %q: node ID %q is not hex", cfg.Name, nodes[i%len(nodes)])
			}
			o.Strategy = &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_NODE_AFFINITY, NodeId: id, Soft: true}
		}
		h, err := c.CreateActor(ctx, ShardType, o)
		if err != nil {
			return nil, fmt.Errorf("cache %q: shard %d: %w", cfg.Name, i, err)
		}
		cl.shards[i] = &shardRef{h: h}
	}
	for i := range cl.shards {
		r, err := cl.call(ctx, i, Request{Op: OpConfigure, Config: cfg})
		if err != nil {
			return nil, fmt.Errorf("cache %q: configure shard %d: %w", cfg.Name, i, err)
		}
		switch r.Code {
		case CodeOK:
		case CodeConflict:
			return nil, errs.New(errs.KindAlreadyExists, cfg.Name, "%s", r.Err)
		default:
			return nil, errShard(r)
		}
	}
	cl.start()
	return cl, nil
}

// Open opens the existing cache name of namespace ns: its configuration is
// read from the first of its shards that answers.
func Open(ctx context.Context, c *core.Core, ns, name string) (*Client, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	var cfg Config
	found := false
	for i := 0; i < MaxShards && !found; i++ {
		h, err := c.GetActor(ctx, ShardName(name, i), ns)
		if errors.Is(err, errs.ErrNotFound) {
			break
		}
		if err != nil {
			continue // dead or unreachable: try the next shard
		}
		if h.TypeName != ShardType {
			return nil, errs.New(errs.KindInvalidArgument, name, "actor %q is a %q, not a cache shard", ShardName(name, i), h.TypeName)
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		r, err := callShard(pctx, c, h, Request{Op: OpPing})
		cancel()
		if err == nil && r.Int == 1 {
			cfg, found = r.Config, true
		}
	}
	if !found {
		if err := ctx.Err(); err != nil {
			return nil, errs.Context(err, "cache")
		}
		return nil, errs.New(errs.KindNotFound, name, "cache %q does not exist in namespace %q (or none of its shards answers): create it with cache.New", name, ns)
	}
	cl := newClient(c, ns, cfg)
	for i := range cfg.Shards {
		h, err := c.GetActor(ctx, ShardName(name, i), ns)
		if err != nil {
			return nil, fmt.Errorf("cache %q: shard %d: %w", name, i, err)
		}
		cl.shards[i] = &shardRef{h: h}
	}
	cl.start()
	return cl, nil
}

func newClient(c *core.Core, ns string, cfg Config) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{c: c, ns: ns, cfg: cfg, ring: newRing(cfg.Shards), shards: make([]*shardRef, cfg.Shards),
		probe: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

// Config is the cache's configuration.
func (cl *Client) Config() Config { return cl.cfg }

// Shard is the index of key's shard.
func (cl *Client) Shard(key string) int { return cl.ring.shard(key) }

// Close stops the prober. The cache lives on (its shards are actors).
func (cl *Client) Close() {
	cl.cancel()
	cl.wg.Wait()
}

// Destroy kills the cache's shards and returns once the head no longer
// lists them under their names (so the cache can be made again at once).
func (cl *Client) Destroy(ctx context.Context) error {
	var first error
	for i, s := range cl.shards {
		if err := cl.c.KillActor(ctx, s.h); err != nil && first == nil && !errors.Is(err, errs.ErrNotFound) {
			first = fmt.Errorf("cache %q: kill shard %d: %w", cl.cfg.Name, i, err)
		}
	}
	if first != nil {
		return first
	}
	for i := range cl.shards {
		for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
			_, err := cl.c.GetActor(ctx, ShardName(cl.cfg.Name, i), cl.ns)
			if errors.Is(err, errs.ErrNotFound) || errors.Is(err, errs.ErrActorDied) {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return errs.Context(ctx.Err(), "cache: destroy")
			}
		}
	}
	return nil
}

func (cl *Client) start() {
	cl.wg.Add(1)
	go cl.prober()
}

// prober asks the lost shards, every probeInterval while any is lost,
// whether they serve again, and clears their mark when they do.
func (cl *Client) prober() {
	defer cl.wg.Done()
	ctx := cl.ctx
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-cl.probe:
		}
		for {
			lost := 0
			for i, s := range cl.shards {
				if s.lost.Load() && !cl.probeShard(ctx, i) {
					lost++
				}
			}
			if lost == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
}

// probeShard asks lost shard i whether it serves again, and clears its mark
// when it does.
//
// A shard whose actor died for good (the cache destroyed) stays lost: a
// cache made again under the same name is not looked up here (a second
// handle made while the new actor takes its first calls hangs a call in
// the core), it is seen by opening it again.
func (cl *Client) probeShard(ctx context.Context, i int) bool {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if _, err := callShard(pctx, cl.c, cl.shards[i].h, Request{Op: OpPing}); err != nil {
		return false
	}
	cl.shards[i].lost.Store(false)
	return true
}

func (cl *Client) markLost(i int) {
	if !cl.shards[i].lost.Swap(true) {
		select {
		case cl.probe <- struct{}{}:
		default:
		}
	}
}

// Lost reports which shards are marked lost now.
func (cl *Client) Lost() []int {
	var out []int
	for i, s := range cl.shards {
		if s.lost.Load() {
			out = append(out, i)
		}
	}
	return out
}

// callShard makes one call and waits for its reply.
func callShard(ctx context.Context, c *core.Core, h *core.ActorHandle, req Request) (Reply, error) {
	var args core.Args
	if err := c.ValueArg(ctx, req, &args); err != nil {
		return Reply{}, err
	}
	return wait(ctx, c, c.CallActor(ctx, h, shardMethod, args))
}

func wait(ctx context.Context, c *core.Core, ref core.Ref) (Reply, error) {
	if err := ref.Usable(); err != nil {
		return Reply{}, err
	}
	p, err := c.GetPayload(ctx, ref.Info())
	ref.Release()
	if err != nil {
		return Reply{}, err
	}
	return core.DecodeValue[Reply](ctx, c, p)
}

// call runs req on shard i; a shard lost with its process or node is
// marked lost and fails with errLost.
func (cl *Client) call(ctx context.Context, i int, req Request) (Reply, error) {
	s := cl.shards[i]
	if s.lost.Load() {
		return Reply{}, errLost(cl.cfg.Name, i)
	}
	r, err := cl.roundTrip(ctx, i, req)
	return cl.finish(ctx, i, req, r, err)
}

// roundTrip runs req on shard i over the data path (direct.go), or as an
// actor call when the data path cannot answer it.
func (cl *Client) roundTrip(ctx context.Context, i int, req Request) (Reply, error) {
	s := cl.shards[i]
	if r, ok, err := doDirect(ctx, cl.c, s, req); ok || err != nil {
		return r, err
	}
	return callShard(ctx, cl.c, s.h, req)
}

// finish handles a reply: a lost shard is marked, a restarted
// (unconfigured) one is configured and asked again.
func (cl *Client) finish(ctx context.Context, i int, req Request, r Reply, err error) (Reply, error) {
	if err != nil {
		if lostErr(err) && ctx.Err() == nil {
			cl.markLost(i)
			return Reply{}, errLostBy(cl.cfg.Name, i, err)
		}
		return Reply{}, err
	}
	if r.Code != CodeUnconfigured || req.Op == OpConfigure {
		return r, nil
	}
	cr, err := callShard(ctx, cl.c, cl.shards[i].h, Request{Op: OpConfigure, Config: cl.cfg})
	if err != nil {
		return cl.finish(ctx, i, req, Reply{}, err)
	}
	if cr.Code != CodeOK {
		return Reply{}, errShard(cr)
	}
	r, err = cl.roundTrip(ctx, i, req)
	if err == nil && r.Code == CodeUnconfigured {
		return Reply{}, errs.New(errs.KindInternal, ShardName(cl.cfg.Name, i), "cache %q: shard %d lost its configuration again", cl.cfg.Name, i)
	}
	return cl.finish(ctx, i, req, r, err)
}

// Do runs req on the shard of req.Key.
func (cl *Client) Do(ctx context.Context, req Request) (Reply, error) {
	if err := CheckKey(req.Key); err != nil {
		return Reply{}, err
	}
	return cl.call(ctx, cl.ring.shard(req.Key), req)
}

// Call is an operation sent and not yet answered (Async).
type Call struct {
	cl     *Client
	i      int
	req    Request
	direct *directCall // sent on the data path, else ref
	ref    core.Ref
	err    error
}

// Async sends req to the shard of req.Key and returns at once; Wait gets
// the reply. Calls from one process to one shard run in the order sent.
func (cl *Client) Async(ctx context.Context, req Request) *Call {
	call := &Call{cl: cl, req: req}
	if err := CheckKey(req.Key); err != nil {
		call.err = err
		return call
	}
	call.i = cl.ring.shard(req.Key)
	s := cl.shards[call.i]
	if s.lost.Load() {
		call.err = errLost(cl.cfg.Name, call.i)
		return call
	}
	if call.direct = sendDirect(cl.c, s, req); call.direct != nil {
		return call
	}
	var args core.Args
	if err := cl.c.ValueArg(ctx, req, &args); err != nil {
		call.err = err
		return call
	}
	call.ref = cl.c.CallActor(ctx, s.h, shardMethod, args)
	return call
}

// Wait waits for the reply.
func (call *Call) Wait(ctx context.Context) (Reply, error) {
	if call.err != nil {
		return Reply{}, call.err
	}
	if call.direct != nil {
		r, ok, err := call.direct.wait(ctx)
		r, ok, err = settleInFlight(call.cl.shards[call.i], call.req, r, ok, err)
		if !ok && err == nil {
			// Not answered on the data path: an actor call.
			r, err = callShard(ctx, call.cl.c, call.cl.shards[call.i].h, call.req)
		}
		return call.cl.finish(ctx, call.i, call.req, r, err)
	}
	r, err := wait(ctx, call.cl.c, call.ref)
	return call.cl.finish(ctx, call.i, call.req, r, err)
}

// Stats asks every shard for its counters; a lost shard's entry has
// Unavailable 1. The total sums them.
func (cl *Client) Stats(ctx context.Context) ([]Stats, Stats, error) {
	calls := make([]*Call, len(cl.shards))
	for i, s := range cl.shards {
		calls[i] = &Call{cl: cl, i: i, req: Request{Op: OpStats}}
		if s.lost.Load() {
			calls[i].err = errLost(cl.cfg.Name, i)
			continue
		}
		var args core.Args
		if err := cl.c.ValueArg(ctx, calls[i].req, &args); err != nil {
			return nil, Stats{}, err
		}
		calls[i].ref = cl.c.CallActor(ctx, s.h, shardMethod, args)
	}
	per := make([]Stats, len(cl.shards))
	var total Stats
	for i, call := range calls {
		r, err := call.Wait(ctx)
		switch {
		case IsLost(err):
			per[i] = Stats{Unavailable: 1}
		case err != nil:
			return nil, Stats{}, err
		default:
			per[i] = r.Stats
		}
		total.Add(per[i])
	}
	return per, total, nil
}

// Computation is a compute lease a caller holds (GetOrCompute's miss).
type Computation struct {
	Key   string
	Lease uint64
}

// Bounds of Acquire's polling while another caller computes: it asks
// again after pollMin, doubling up to pollMax (and never past the other
// caller's lease, when it would run out sooner).
const (
	pollMin = time.Millisecond
	pollMax = 25 * time.Millisecond
)

// Acquire returns key's value (hit true), or a lease under which the
// caller computes it (Fulfill or Abandon it). While another caller holds
// the lease it polls the shard until that caller's value is there or its
// lease is given up or runs out. leaseMs 0 is DefaultLease.
func (cl *Client) Acquire(ctx context.Context, key string, leaseMs int64) (Value, bool, Computation, error) {
	wait := pollMin
	for {
		r, err := cl.Do(ctx, Request{Op: OpAcquire, Key: key, LeaseMs: leaseMs})
		if err != nil {
			return Value{}, false, Computation{}, err
		}
		switch r.Code {
		case CodeHit:
			return r.Val, true, Computation{}, nil
		case CodeLease:
			return Value{}, false, Computation{Key: key, Lease: r.Lease}, nil
		case CodePending:
			d := wait
			if left := time.Duration(r.Int) * time.Millisecond; left >= 0 && left < d {
				d = left + time.Millisecond
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return Value{}, false, Computation{}, errs.Context(ctx.Err(), "cache")
			}
			wait = min(2*wait, pollMax)
		default:
			return Value{}, false, Computation{}, errShard(r)
		}
	}
}

// Fulfill stores the value computed under comp, for the waiters to find.
func (cl *Client) Fulfill(ctx context.Context, comp Computation, v Value, ttlMs int64) error {
	r, err := cl.Do(ctx, Request{Op: OpFulfill, Key: comp.Key, Lease: comp.Lease, Val: v, TTLms: ttlMs})
	if err != nil {
		return err
	}
	if r.Code != CodeOK {
		return errShard(r)
	}
	return nil
}

// Abandon gives comp's lease up: the next waiter computes.
func (cl *Client) Abandon(ctx context.Context, comp Computation) error {
	_, err := cl.Do(ctx, Request{Op: OpAbandon, Key: comp.Key, Lease: comp.Lease})
	return err
}

// GetOrCompute returns key's value; on a miss exactly one caller across
// the cluster computes it (compute) while the others wait for its value.
// The lease is renewed while compute runs; when compute fails the lease is
// given up and the error returned (a waiter computes next). A lost shard
// makes every caller compute, uncached. computed says whether this caller
// computed the value.
func (cl *Client) GetOrCompute(ctx context.Context, key string, ttlMs int64, compute func(context.Context) (Value, error)) (v Value, computed bool, err error) {
	v, hit, comp, err := cl.Acquire(ctx, key, DefaultLease.Milliseconds())
	switch {
	case IsLost(err):
		v, err = compute(ctx)
		return v, true, err
	case err != nil:
		return Value{}, false, err
	case hit:
		return v, false, nil
	}
	renewCtx, stopRenew := context.WithCancel(ctx)
	var renewer sync.WaitGroup
	renewer.Go(func() {
		t := time.NewTicker(DefaultLease / 3)
		defer t.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-t.C:
				if r, err := cl.Do(renewCtx, Request{Op: OpRenew, Key: key, Lease: comp.Lease, LeaseMs: DefaultLease.Milliseconds()}); err != nil || r.Code != CodeOK {
					return
				}
			}
		}
	})
	v, err = runCompute(ctx, compute)
	stopRenew()
	renewer.Wait()
	if err != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
		_ = cl.Abandon(actx, comp) // a lost shard or lease needs no abandoning
		cancel()
		return Value{}, true, err
	}
	if ferr := cl.Fulfill(ctx, comp, v, ttlMs); ferr != nil && !IsLost(ferr) {
		return v, true, ferr
	}
	return v, true, nil
}

// runCompute runs compute, turning a panic into an error so that the lease
// is given up.
func runCompute(ctx context.Context, compute func(context.Context) (Value, error)) (v Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errs.New(errs.KindTaskFailed, "", "cache: compute function panicked: %v", r)
		}
	}()
	return compute(ctx)
}
