// Package cache is goray's distributed cache: a cluster-wide key-value
// cache of typed values, sharded over the nodes by consistent hashing and
// built on goray's own actors.
//
//	users, err := cache.New[User](ctx, "users", cache.WithMaxEntries(10_000), cache.WithTTL(time.Minute))
//	defer users.Close()
//	u, err := users.GetOrCompute(ctx, "u42", func(ctx context.Context) (User, error) { return loadUser(ctx, 42) })
//
// Each shard is an actor (named, so any driver of the namespace finds it
// with Open) placed with soft affinity on a node; its capacity (entries
// and bytes) is enforced with least-recently-used eviction, entries may
// expire (TTL), and every operation on a key is atomic in its shard:
// increments, compare-and-swap and registered update functions run there,
// under the shard's lock. GetOrCompute computes a missing value once
// across the cluster however many callers ask for it at once. A shard lost
// with its node turns into misses, not errors, until it is restarted
// (empty) on a live node. See docs/storage.md ("Cache").
//
// Values are encoded as goray encodes everything ([]byte raw, protobuf
// messages as protobuf, other values as MessagePack), so clients in other
// languages read and write the same entries through ClientService.
package cache

import (
	"context"
	"fmt"
	"time"

	icache "github.com/goray/goray/internal/cache"
	"github.com/goray/goray/internal/codec"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Option configures New and Open. Options are opaque: make them with the
// WithX functions of this package.
type Option interface{ apply(*options) }

type options struct {
	namespace  string
	shards     int
	maxEntries int
	maxBytes   int64
	ttl        time.Duration
	nodes      []string
	detached   bool
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithShards sets how many shards a new cache has (1 to 4096). Default:
// one per alive node (WithNodes: one per node named).
func WithShards(n int) Option { return optionFunc(func(o *options) { o.shards = n }) }

// WithMaxEntries bounds each shard's entries; past it the least recently
// used entry is evicted. Default 0: no bound (WithMaxBytes may still bound
// it).
func WithMaxEntries(n int) Option { return optionFunc(func(o *options) { o.maxEntries = n }) }

// WithMaxBytes bounds each shard's bytes (keys, values and 64 bytes of
// bookkeeping per entry); past it the least recently used entries are
// evicted. A value larger than this is not stored. Default 0: no bound.
func WithMaxBytes(n int64) Option { return optionFunc(func(o *options) { o.maxBytes = n }) }

// WithTTL sets how long an entry lives after it was set, unless the set
// says otherwise (SetTTL). Default 0: entries do not expire.
func WithTTL(d time.Duration) Option { return optionFunc(func(o *options) { o.ttl = d }) }

// WithNodes places the shards on these nodes (IDs as runtime.Nodes gives
// them), round robin, with soft affinity. Default: the alive nodes.
func WithNodes(ids ...string) Option { return optionFunc(func(o *options) { o.nodes = ids }) }

// WithDetached lets the cache outlive the job that made it, until
// Destroy. Default: its shards die with the job.
func WithDetached() Option { return optionFunc(func(o *options) { o.detached = true }) }

// WithNamespace sets the namespace the cache's shards are named in.
// Default: the driver's (runtime.WithNamespace).
func WithNamespace(ns string) Option { return optionFunc(func(o *options) { o.namespace = ns }) }

// Cache is a distributed cache of values of type V. It is safe for
// concurrent use; Close it when done (the cache itself lives on).
type Cache[V any] struct {
	cl *icache.Client
}

// New creates the cache name, or opens it when it already exists with the
// same shards, capacity and TTL (another configuration fails with
// runtime.ErrAlreadyExists).
func New[V any](ctx context.Context, name string, opts ...Option) (*Cache[V], error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.ttl < 0 {
		return nil, errs.New(errs.KindInvalidArgument, name, "cache %q: negative TTL %v", name, o.ttl)
	}
	cfg := icache.Config{Name: name, Shards: o.shards, MaxEntries: o.maxEntries, MaxBytes: o.maxBytes, TTLms: o.ttl.Milliseconds()}
	if o.ttl > 0 && cfg.TTLms == 0 {
		cfg.TTLms = 1
	}
	if cfg.Shards == 0 {
		n, err := aliveNodes(ctx, c, o.nodes)
		if err != nil {
			return nil, err
		}
		cfg.Shards = n
	}
	cl, err := icache.Create(ctx, c, o.namespace, cfg, icache.Placement{Nodes: o.nodes, Detached: o.detached})
	if err != nil {
		return nil, err
	}
	return &Cache[V]{cl}, nil
}

func aliveNodes(ctx context.Context, c *core.Core, named []string) (int, error) {
	if len(named) > 0 {
		return len(named), nil
	}
	resp, err := c.Head().ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		return 0, fmt.Errorf("cache: list nodes: %w", errs.FromStatus(err))
	}
	n := 0
	for _, x := range resp.GetNodes() {
		if x.GetAlive() {
			n++
		}
	}
	return max(n, 1), nil
}

// Open opens the existing cache name (WithNamespace is the only option it
// reads). A cache that does not exist fails with runtime.ErrNotFound.
func Open[V any](ctx context.Context, name string, opts ...Option) (*Cache[V], error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	cl, err := icache.Open(ctx, c, o.namespace, name)
	if err != nil {
		return nil, err
	}
	return &Cache[V]{cl}, nil
}

// Close releases this process's use of the cache; the cache lives on.
func (c *Cache[V]) Close() { c.cl.Close() }

// Destroy kills the cache's shards: every entry is gone and Open fails.
func (c *Cache[V]) Destroy(ctx context.Context) error { return c.cl.Destroy(ctx) }

// Name is the cache's name.
func (c *Cache[V]) Name() string { return c.cl.Config().Name }

// Shards is the cache's number of shards.
func (c *Cache[V]) Shards() int { return c.cl.Config().Shards }

func encode[V any](v V) (icache.Value, error) {
	p, err := codec.Encode(v)
	if err != nil {
		return icache.Value{}, errs.New(errs.KindInvalidArgument, "", "cache: %v", err)
	}
	return icache.Value{Enc: int32(p.GetEncoding()), Data: p.GetData()}, nil
}

func decode[V any](key string, v icache.Value) (V, error) {
	out, err := codec.Decode[V](&pb.Payload{Encoding: pb.Encoding(v.Enc), Data: v.Data})
	if err != nil {
		var zero V
		return zero, errs.New(errs.KindInvalidArgument, key, "cache: the value of key %q does not decode as %T: %v", key, zero, err)
	}
	return out, nil
}

// SetOption configures one Set, GetOrCompute or atomic operation.
type SetOption interface{ applySet(*setOptions) }

type setOptions struct{ ttlMs int64 }

type setOptionFunc func(*setOptions)

func (f setOptionFunc) applySet(o *setOptions) { f(o) }

// SetTTL makes the entry expire d after this set instead of after the
// cache's TTL; d ≤ 0 makes it never expire.
func SetTTL(d time.Duration) SetOption {
	return setOptionFunc(func(o *setOptions) {
		switch ms := d.Milliseconds(); {
		case d <= 0:
			o.ttlMs = -1
		case ms == 0:
			o.ttlMs = 1
		default:
			o.ttlMs = ms
		}
	})
}

func setOpts(opts []SetOption) setOptions {
	var o setOptions
	for _, opt := range opts {
		opt.applySet(&o)
	}
	return o
}

// reply turns a lost shard into a miss: ok false, no error.
func getReply[V any](key string, r icache.Reply, err error) (V, bool, error) {
	var zero V
	switch {
	case icache.IsLost(err):
		return zero, false, nil
	case err != nil:
		return zero, false, err
	case r.Code == icache.CodeHit:
		v, err := decode[V](key, r.Val)
		return v, err == nil, err
	case r.Code == icache.CodeMiss:
		return zero, false, nil
	}
	return zero, false, shardErr(r)
}

func shardErr(r icache.Reply) error {
	if r.Err != "" {
		return errs.New(errs.KindInvalidArgument, "", "cache: %s", r.Err)
	}
	return errs.New(errs.KindInternal, "", "cache: unexpected shard answer %d", r.Code)
}

// Get returns key's value; ok is false on a miss (absent, expired,
// evicted, or its shard lost with its node).
func (c *Cache[V]) Get(ctx context.Context, key string) (v V, ok bool, err error) {
	r, err := c.cl.Do(ctx, icache.Request{Op: icache.OpGet, Key: key})
	return getReply[V](key, r, err)
}

// Set stores v under key. A set to a lost shard is dropped (as if evicted
// at once) and returns nil.
func (c *Cache[V]) Set(ctx context.Context, key string, v V, opts ...SetOption) error {
	val, err := encode(v)
	if err != nil {
		return err
	}
	r, err := c.cl.Do(ctx, icache.Request{Op: icache.OpSet, Key: key, Val: val, TTLms: setOpts(opts).ttlMs})
	return setReply(r, err)
}

func setReply(r icache.Reply, err error) error {
	switch {
	case icache.IsLost(err):
		return nil
	case err != nil:
		return err
	case r.Code == icache.CodeOK:
		return nil
	}
	return shardErr(r)
}

// Delete removes key and reports whether it was there. A lost shard holds
// nothing: false, nil.
func (c *Cache[V]) Delete(ctx context.Context, key string) (bool, error) {
	r, err := c.cl.Do(ctx, icache.Request{Op: icache.OpDelete, Key: key})
	switch {
	case icache.IsLost(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return r.Int == 1, nil
}

// GetOrCompute returns key's value, computing it with compute on a miss.
// However many callers across the cluster ask for a missing key at once,
// one of them computes (its shard hands it a lease) and the others wait
// for its value. When that caller's compute fails, or the caller dies (its
// lease is not renewed for 10 s), the next waiter computes. compute's error
// is returned to its own caller only. With the key's shard lost, every
// caller computes and nothing is stored.
func (c *Cache[V]) GetOrCompute(ctx context.Context, key string, compute func(context.Context) (V, error), opts ...SetOption) (V, error) {
	var out V
	computed := false
	val, _, err := c.cl.GetOrCompute(ctx, key, setOpts(opts).ttlMs, func(ctx context.Context) (icache.Value, error) {
		v, err := compute(ctx)
		if err != nil {
			return icache.Value{}, err
		}
		out, computed = v, true
		return encode(v)
	})
	if err != nil {
		var zero V
		return zero, err
	}
	if computed {
		return out, nil
	}
	return decode[V](key, val)
}

// SetIfAbsent stores v under key only when the key holds nothing, and
// reports whether it did. On a lost shard it fails with
// runtime.ErrUnavailable.
func (c *Cache[V]) SetIfAbsent(ctx context.Context, key string, v V, opts ...SetOption) (bool, error) {
	val, err := encode(v)
	if err != nil {
		return false, err
	}
	r, err := c.cl.Do(ctx, icache.Request{Op: icache.OpCAS, Key: key, Absent: true, Val: val, TTLms: setOpts(opts).ttlMs})
	return casReply(r, err)
}

// CompareAndSwap stores new under key only when the key holds old (compared
// as encoded bytes), and reports whether it did. On a lost shard it fails
// with runtime.ErrUnavailable.
func (c *Cache[V]) CompareAndSwap(ctx context.Context, key string, old, new V, opts ...SetOption) (bool, error) {
	o, err := encode(old)
	if err != nil {
		return false, err
	}
	n, err := encode(new)
	if err != nil {
		return false, err
	}
	r, err := c.cl.Do(ctx, icache.Request{Op: icache.OpCAS, Key: key, Old: o, Val: n, TTLms: setOpts(opts).ttlMs})
	return casReply(r, err)
}

func casReply(r icache.Reply, err error) (bool, error) {
	switch {
	case err != nil:
		return false, err
	case r.Code == icache.CodeOK:
		return true, nil
	case r.Code == icache.CodeNotSwapped:
		return false, nil
	}
	return false, shardErr(r)
}

// Incr adds delta to the integer under key (a missing key counts as 0) in
// its shard, atomically, and returns the new value. The value is stored as
// a MessagePack integer, so a Cache[int64] (or any integer type) reads it.
// A value that is not an integer fails with runtime.ErrInvalidArgument, a
// lost shard with runtime.ErrUnavailable.
func (c *Cache[V]) Incr(ctx context.Context, key string, delta int64, opts ...SetOption) (int64, error) {
	r, err := c.cl.Do(ctx, icache.Request{Op: icache.OpIncr, Key: key, Delta: delta, TTLms: setOpts(opts).ttlMs})
	switch {
	case err != nil:
		return 0, err
	case r.Code == icache.CodeHit:
		return r.Int, nil
	}
	return 0, shardErr(r)
}

// Stats are a cache's counters.
type Stats struct {
	// Total sums the shards that answered.
	Total ShardStats
	// Shards are each shard's, in shard order.
	Shards []ShardStats
}

// ShardStats are one shard's counters since it (last) started.
type ShardStats struct {
	Hits, Misses, Evictions, Expirations uint64
	// Computes counts the computations GetOrCompute ran (leases granted).
	Computes uint64
	Entries  int64
	Bytes    int64
	// Node is the ID of the node hosting the shard ("" in Total).
	Node string
	// Unavailable counts the shards that are lost (1 or 0 for a shard).
	Unavailable int
}

func shardStats(s icache.Stats) ShardStats {
	return ShardStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions, Expirations: s.Expirations,
		Computes: s.Computes, Entries: s.Entries, Bytes: s.Bytes, Node: s.Node, Unavailable: s.Unavailable}
}

// Stats asks every shard for its counters.
func (c *Cache[V]) Stats(ctx context.Context) (Stats, error) {
	per, total, err := c.cl.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	out := Stats{Total: shardStats(total), Shards: make([]ShardStats, len(per))}
	for i, s := range per {
		out.Shards[i] = shardStats(s)
	}
	return out, nil
}

// GetCall is a Get sent and not yet answered (GetAsync).
type GetCall[V any] struct {
	key  string
	call *icache.Call
}

// GetAsync sends a Get and returns at once: many in flight at once are
// pipelined to their shards. Wait answers as Get does.
func (c *Cache[V]) GetAsync(ctx context.Context, key string) *GetCall[V] {
	return &GetCall[V]{key, c.cl.Async(ctx, icache.Request{Op: icache.OpGet, Key: key})}
}

// Wait waits for the Get's answer.
func (g *GetCall[V]) Wait(ctx context.Context) (V, bool, error) {
	r, err := g.call.Wait(ctx)
	return getReply[V](g.key, r, err)
}

// SetCall is a Set sent and not yet answered (SetAsync).
type SetCall struct {
	call *icache.Call
	err  error
}

// SetAsync sends a Set and returns at once. Wait answers as Set does.
func (c *Cache[V]) SetAsync(ctx context.Context, key string, v V, opts ...SetOption) *SetCall {
	val, err := encode(v)
	if err != nil {
		return &SetCall{err: err}
	}
	return &SetCall{call: c.cl.Async(ctx, icache.Request{Op: icache.OpSet, Key: key, Val: val, TTLms: setOpts(opts).ttlMs})}
}

// Wait waits for the Set's answer.
func (s *SetCall) Wait(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	r, err := s.call.Wait(ctx)
	return setReply(r, err)
}
