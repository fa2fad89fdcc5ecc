package cache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
)

// ShardType is the registered name of the shard actor type, and shardMethod
// the one method every operation goes through.
const (
	ShardType   = "goray.cache.shard"
	shardMethod = "do"
)

// Op is an operation on a shard.
type Op int8

// The operations.
const (
	OpGet       Op = iota + 1 // value of Key
	OpSet                     // store Val under Key for TTLms
	OpDelete                  // remove Key
	OpAcquire                 // value of Key, or a compute lease for it
	OpFulfill                 // store the value computed under Lease
	OpAbandon                 // give Lease up: another caller computes
	OpRenew                   // extend Lease by LeaseMs
	OpIncr                    // add Delta to the integer under Key
	OpCAS                     // swap Val in when Key holds Old (Absent: when it holds nothing)
	OpUpdate                  // apply the registered update function Fn to Key's value
	OpStats                   // the shard's counters
	OpConfigure               // set the shard's configuration (Config)
	OpPing                    // answer
)

var opNames = [...]string{OpGet: "get", OpSet: "set", OpDelete: "delete", OpAcquire: "acquire", OpFulfill: "fulfill",
	OpAbandon: "abandon", OpRenew: "renew", OpIncr: "increment", OpCAS: "compare-and-swap", OpUpdate: "update",
	OpStats: "stats", OpConfigure: "configure", OpPing: "ping"}

func (o Op) String() string {
	if o > 0 && int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op %d", int(o))
}

// Code is a shard's answer.
type Code int8

// The answers.
const (
	CodeOK           Code = iota + 1 // done (set, renewed, configured, ping)
	CodeHit                          // Val is the value
	CodeMiss                         // no value
	CodeLease                        // the caller computes the value under Lease
	CodePending                      // another caller computes it: ask again
	CodeLeaseLost                    // the lease expired or was never held
	CodeNotSwapped                   // CAS: Key holds Val, not Old
	CodeUnconfigured                 // the shard (new or restarted) has no configuration: send OpConfigure
	CodeConflict                     // OpConfigure with a configuration other than the shard's
	CodeTooLarge                     // the value is larger than the shard's byte capacity
	CodeError                        // Err says what was wrong with the request
)

// Config is a cache's configuration, held by each of its shards.
type Config struct {
	Name       string `msgpack:"n"`
	Shards     int    `msgpack:"s"`
	MaxEntries int    `msgpack:"me"` // per shard; 0: no bound
	MaxBytes   int64  `msgpack:"mb"` // per shard; 0: no bound
	TTLms      int64  `msgpack:"t"`  // default TTL of a set; 0: none
}

// Request is one operation on a shard.
type Request struct {
	Op      Op     `msgpack:"o"`
	Key     string `msgpack:"k,omitempty"`
	Val     Value  `msgpack:"v,omitempty"`
	Old     Value  `msgpack:"ov,omitempty"`
	Absent  bool   `msgpack:"a,omitempty"`
	TTLms   int64  `msgpack:"t,omitempty"` // > 0: this TTL; 0: the cache's default; < 0: none
	Lease   uint64 `msgpack:"l,omitempty"`
	LeaseMs int64  `msgpack:"lm,omitempty"`
	Delta   int64  `msgpack:"dl,omitempty"`
	Fn      string `msgpack:"f,omitempty"`
	Config  Config `msgpack:"c,omitempty"`
}

// Reply is a shard's answer to a Request.
type Reply struct {
	Code  Code   `msgpack:"c"`
	Val   Value  `msgpack:"v,omitempty"`
	Lease uint64 `msgpack:"l,omitempty"`
	Int   int64  `msgpack:"i,omitempty"`
	Err   string `msgpack:"e,omitempty"`
	Stats Stats  `msgpack:"s,omitempty"`
	// Config is the shard's configuration (OpPing of a configured shard).
	Config Config `msgpack:"cf,omitempty"`
}

// Stats are a shard's counters, or their sum over a cache's shards.
type Stats struct {
	Hits        uint64 `msgpack:"h"`
	Misses      uint64 `msgpack:"m"`
	Evictions   uint64 `msgpack:"ev"`
	Expirations uint64 `msgpack:"ex"`
	Entries     int64  `msgpack:"n"`
	Bytes       int64  `msgpack:"b"`
	// Computes counts compute leases granted: one per computation.
	Computes uint64 `msgpack:"cp"`
	// Node is the node that hosts the shard ("" in a sum).
	Node string `msgpack:"nd,omitempty"`
	// Unavailable counts the shards that did not answer (in a sum).
	Unavailable int `msgpack:"u,omitempty"`
}

// Add adds o's counters to s.
func (s *Stats) Add(o Stats) {
	s.Hits += o.Hits
	s.Misses += o.Misses
	s.Evictions += o.Evictions
	s.Expirations += o.Expirations
	s.Entries += o.Entries
	s.Bytes += o.Bytes
	s.Computes += o.Computes
	s.Unavailable += o.Unavailable
}

// Bounds of a shard's waits and leases.
const (
	// DefaultLease is a compute lease's duration when the request names
	// none; the SDK renews its leases while it computes.
	DefaultLease = 10 * time.Second
	// MaxLease bounds a lease's duration.
	MaxLease = 10 * time.Minute
	// ShardConcurrency is how many calls a shard serves at once: one, so
	// that a shard's calls run inline in its mailbox's goroutine (calls that
	// overlap cost a goroutine each and measured a third slower). No call
	// blocks in a shard: a caller waiting for another's computation asks
	// again (Client.Acquire's backoff).
	ShardConcurrency = 1
)

// UpdateFunc is an update function applied in a shard, under its lock: it
// gets the key's current value (ok false when there is none) and the
// request's argument, and returns the new value, or drop true to delete
// the key.
type UpdateFunc func(old Value, ok bool, arg Value) (v Value, drop bool, err error)

var updates = struct {
	mu sync.RWMutex
	fn map[string]UpdateFunc
}{fn: map[string]UpdateFunc{}}

// RegisterUpdate registers an update function under name. Call it at
// package level, like actor.Register: shards run in the job's workers and
// find the function by name there. Registering a name twice panics.
func RegisterUpdate(name string, f UpdateFunc) {
	if name == "" {
		panic("goray: cache.RegisterUpdate with an empty name")
	}
	updates.mu.Lock()
	defer updates.mu.Unlock()
	if _, dup := updates.fn[name]; dup {
		panic(fmt.Sprintf("goray: cache update function %q registered twice", name))
	}
	updates.fn[name] = f
}

func lookupUpdate(name string) (UpdateFunc, bool) {
	updates.mu.RLock()
	defer updates.mu.RUnlock()
	f, ok := updates.fn[name]
	return f, ok
}

// pending is a computation under way: the lease its caller holds.
type pending struct {
	lease   uint64
	expires time.Time
}

// Shard is one shard of a cache: an actor (ShardType) whose calls run one
// at a time (ShardConcurrency), over state behind mu (the actor's mailbox
// goroutine is its only caller outside tests).
type Shard struct {
	now func() time.Time

	mu         sync.Mutex
	configured bool                // guarded by mu
	cfg        Config              // guarded by mu
	store      *lru                // guarded by mu
	pending    map[string]*pending // guarded by mu
	hits       uint64              // guarded by mu
	misses     uint64              // guarded by mu
	computes   uint64              // guarded by mu
}

// NewShard makes an unconfigured shard.
func NewShard() *Shard {
	return &Shard{now: time.Now, pending: map[string]*pending{}}
}

func init() {
	t := core.RegisterActorType(ShardType, func() any { return NewShard() })
	t.RegisterMethod(&core.Method{Name: shardMethod, ArgTypes: []reflect.Type{reflect.TypeFor[Request]()},
		Call: func(ctx context.Context, recv any, args []any) (any, error) {
			req, _ := args[0].(Request)
			return recv.(*Shard).Do(ctx, req), nil
		}})
}

// Do runs one request.
func (s *Shard) Do(ctx context.Context, req Request) Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Op {
	case OpPing:
		return Reply{Code: CodeOK, Config: s.cfg, Int: boolInt(s.configured)}
	case OpConfigure:
		return s.configure(req.Config)
	}
	if !s.configured {
		return Reply{Code: CodeUnconfigured}
	}
	now := s.now()
	switch req.Op {
	case OpGet:
		if v, ok := s.store.get(req.Key, now); ok {
			s.hits++
			return Reply{Code: CodeHit, Val: v}
		}
		s.misses++
		return Reply{Code: CodeMiss}
	case OpSet:
		return s.set(req.Key, req.Val, req.TTLms, now)
	case OpDelete:
		if s.store.delete(req.Key) {
			return Reply{Code: CodeOK, Int: 1}
		}
		return Reply{Code: CodeOK}
	case OpAcquire:
		return s.acquire(req, now)
	case OpFulfill:
		r := s.set(req.Key, req.Val, req.TTLms, now)
		s.end(req.Key, req.Lease)
		return r
	case OpAbandon:
		s.end(req.Key, req.Lease)
		return Reply{Code: CodeOK}
	case OpRenew:
		p := s.pending[req.Key]
		if p == nil || p.lease != req.Lease || !now.Before(p.expires) {
			return Reply{Code: CodeLeaseLost}
		}
		p.expires = now.Add(leaseDuration(req.LeaseMs))
		return Reply{Code: CodeOK}
	case OpIncr:
		return s.incr(req, now)
	case OpCAS:
		cur, ok := s.store.peek(req.Key, now)
		if req.Absent && ok || !req.Absent && (!ok || cur.Enc != req.Old.Enc || string(cur.Data) != string(req.Old.Data)) {
			return Reply{Code: CodeNotSwapped, Val: cur, Int: boolInt(ok)}
		}
		return s.set(req.Key, req.Val, req.TTLms, now)
	case OpUpdate:
		f, ok := lookupUpdate(req.Fn)
		if !ok {
			return Reply{Code: CodeError, Err: fmt.Sprintf("no cache update function %q is registered in this job's program: register it with cache.RegisterUpdate at package level", req.Fn)}
		}
		cur, had := s.store.peek(req.Key, now)
		v, drop, err := callUpdate(f, cur, had, req.Val)
		if err != nil {
			return Reply{Code: CodeError, Err: fmt.Sprintf("update %q of key %q: %v", req.Fn, req.Key, err)}
		}
		if drop {
			s.store.delete(req.Key)
			return Reply{Code: CodeMiss}
		}
		if r := s.set(req.Key, v, req.TTLms, now); r.Code != CodeOK {
			return r
		}
		return Reply{Code: CodeHit, Val: v}
	case OpStats:
		return Reply{Code: CodeOK, Stats: s.stats()}
	}
	return Reply{Code: CodeError, Err: fmt.Sprintf("unknown cache operation %d: the client is newer than the cluster's cache", req.Op)}
}

// callUpdate runs f, turning a panic into an error: the shard keeps serving.
func callUpdate(f UpdateFunc, cur Value, had bool, arg Value) (v Value, drop bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f(cur, had, arg)
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func (s *Shard) configure(c Config) Reply {
	if c.Shards < 1 || c.MaxEntries < 0 || c.MaxBytes < 0 || c.TTLms < 0 {
		return Reply{Code: CodeError, Err: fmt.Sprintf("bad cache configuration %+v: want ≥ 1 shard and no negative capacity or TTL", c)}
	}
	if s.configured {
		if s.cfg != c {
			return Reply{Code: CodeConflict, Err: fmt.Sprintf("cache %q exists with %d shard(s), %d entries and %d bytes per shard, TTL %dms; asked for %d, %d, %d, %dms: open it with cache.Open, or pick another name",
				s.cfg.Name, s.cfg.Shards, s.cfg.MaxEntries, s.cfg.MaxBytes, s.cfg.TTLms, c.Shards, c.MaxEntries, c.MaxBytes, c.TTLms)}
		}
		return Reply{Code: CodeOK}
	}
	s.cfg, s.configured = c, true
	s.store = newLRU(c.MaxEntries, c.MaxBytes)
	return Reply{Code: CodeOK}
}

func (s *Shard) ttl(ms int64) time.Duration {
	switch {
	case ms > 0:
		return time.Duration(ms) * time.Millisecond
	case ms == 0:
		return time.Duration(s.cfg.TTLms) * time.Millisecond
	}
	return 0
}

func (s *Shard) set(key string, v Value, ttlMs int64, now time.Time) Reply {
	if !s.store.set(key, v, s.ttl(ttlMs), now) {
		return Reply{Code: CodeTooLarge, Err: fmt.Sprintf("value of key %q is %d bytes, more than a shard's capacity of %d bytes", key, len(v.Data), s.cfg.MaxBytes)}
	}
	return Reply{Code: CodeOK}
}

func (s *Shard) incr(req Request, now time.Time) Reply {
	var n int64
	if cur, ok := s.store.peek(req.Key, now); ok {
		x, err := DecodeInt(cur)
		if err != nil {
			return Reply{Code: CodeError, Err: fmt.Sprintf("increment key %q: %v", req.Key, err)}
		}
		n = x
	}
	n += req.Delta
	if r := s.set(req.Key, EncodeInt(n), req.TTLms, now); r.Code != CodeOK {
		return r
	}
	return Reply{Code: CodeHit, Int: n, Val: EncodeInt(n)}
}

func leaseDuration(ms int64) time.Duration {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d <= 0:
		return DefaultLease
	case d > MaxLease:
		return MaxLease
	}
	return d
}

// acquire answers a hit, grants a compute lease, or answers CodePending
// (with the lease's remaining milliseconds in Int) while another caller
// holds one. Called with mu held.
func (s *Shard) acquire(req Request, now time.Time) Reply {
	if v, ok := s.store.get(req.Key, now); ok {
		s.hits++
		return Reply{Code: CodeHit, Val: v}
	}
	if p := s.pending[req.Key]; p != nil && now.Before(p.expires) {
		return Reply{Code: CodePending, Int: p.expires.Sub(now).Milliseconds()}
	}
	// No lease, or an expired one (its caller died or hung): a new one.
	p := &pending{lease: newLease(), expires: now.Add(leaseDuration(req.LeaseMs))}
	s.pending[req.Key] = p
	s.misses++
	s.computes++
	return Reply{Code: CodeLease, Lease: p.lease}
}

// end ends the computation under lease (a stale lease ends nothing).
func (s *Shard) end(key string, lease uint64) {
	if p := s.pending[key]; p != nil && p.lease == lease {
		delete(s.pending, key)
	}
}

func (s *Shard) stats() Stats {
	st := Stats{Hits: s.hits, Misses: s.misses, Computes: s.computes, Evictions: s.store.evictions,
		Expirations: s.store.expirations, Entries: int64(s.store.len()), Bytes: s.store.bytes}
	if c, err := core.Current(); err == nil {
		st.Node = c.NodeID().String()
	}
	return st
}

func newLease() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	// Below 2^53, so that JavaScript numbers carry a lease exactly; never 0
	// (no lease).
	return binary.LittleEndian.Uint64(b[:])&(1<<53-1) | 1
}

// errShard turns a CodeError reply into an error.
func errShard(r Reply) error { return errs.New(errs.KindInvalidArgument, "", "cache: %s", r.Err) }
