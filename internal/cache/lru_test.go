package cache

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func val(s string) Value { return Value{Enc: 1, Data: []byte(s)} }

// TestLRUOrderAndCapacity runs steps on a store and checks the keys it
// holds, most recently used first, and its eviction count.
func TestLRUOrderAndCapacity(t *testing.T) {
	type step struct {
		op  string // set, get, del
		key string
		val string
	}
	big := string(make([]byte, 200))
	tests := []struct {
		name       string
		maxEntries int
		maxBytes   int64
		steps      []step
		want       []string
		evictions  uint64
	}{
		{"under capacity keeps insertion order", 3, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"set", "c", "3"}}, []string{"c", "b", "a"}, 0},
		{"past capacity evicts the oldest", 2, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"set", "c", "3"}}, []string{"c", "b"}, 1},
		{"a get makes a key recent", 2, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"get", "a", ""}, {"set", "c", "3"}}, []string{"c", "a"}, 1},
		{"a set of an existing key makes it recent without evicting", 2, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"set", "a", "9"}, {"set", "c", "3"}}, []string{"c", "a"}, 1},
		{"a get of a missing key changes nothing", 2, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"get", "zz", ""}, {"set", "c", "3"}}, []string{"c", "b"}, 1},
		{"delete frees room", 2, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"del", "a", ""}, {"set", "c", "3"}}, []string{"c", "b"}, 0},
		{"capacity one", 1, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"get", "a", ""}, {"set", "c", "3"}}, []string{"c"}, 2},
		{"byte capacity evicts until the bytes fit", 0, 2 * (entryOverhead + 201),
			[]step{{"set", "a", big}, {"set", "b", big}, {"set", "c", big}}, []string{"c", "b"}, 1},
		{"a big value evicts several small ones", 0, entryOverhead + 210,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"set", "c", "3"}, {"set", "d", big}}, []string{"d"}, 3},
		{"a value larger than the capacity is not stored and drops the old one", 0, entryOverhead + 10,
			[]step{{"set", "a", "1"}, {"set", "a", big}}, []string{}, 0},
		{"no bound", 0, 0,
			[]step{{"set", "a", "1"}, {"set", "b", "2"}, {"set", "c", "3"}, {"set", "d", "4"}}, []string{"d", "c", "b", "a"}, 0},
	}
	now := time.Unix(1000, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLRU(tc.maxEntries, tc.maxBytes)
			for _, s := range tc.steps {
				switch s.op {
				case "set":
					l.set(s.key, val(s.val), 0, now)
				case "get":
					l.get(s.key, now)
				case "del":
					l.delete(s.key)
				}
			}
			if got := l.keys(); !slices.Equal(got, tc.want) {
				t.Errorf("keys: got %v, want %v", got, tc.want)
			}
			if l.evictions != tc.evictions {
				t.Errorf("evictions: got %d, want %d", l.evictions, tc.evictions)
			}
			var bytes int64
			for _, k := range l.keys() {
				v, _ := l.peek(k, now)
				bytes += entrySize(k, v)
			}
			if l.bytes != bytes {
				t.Errorf("byte count: got %d, want %d", l.bytes, bytes)
			}
		})
	}
}

func TestLRUTTL(t *testing.T) {
	l := newLRU(0, 0)
	now := time.Unix(1000, 0)
	l.set("short", val("s"), time.Second, now)
	l.set("long", val("l"), time.Minute, now)
	l.set("never", val("n"), 0, now)
	if _, ok := l.get("short", now.Add(999*time.Millisecond)); !ok {
		t.Fatal("short before its TTL: got a miss, want a hit")
	}
	if _, ok := l.get("short", now.Add(time.Second)); ok {
		t.Fatal("short at its TTL: got a hit, want a miss")
	}
	if _, ok := l.get("long", now.Add(30*time.Second)); !ok {
		t.Fatal("long within its TTL: got a miss, want a hit")
	}
	if _, ok := l.get("never", now.Add(1000*time.Hour)); !ok {
		t.Fatal("no TTL: got a miss, want a hit")
	}
	if l.expirations != 1 || l.len() != 2 {
		t.Fatalf("after one expiry: got %d expirations and %d entries, want 1 and 2", l.expirations, l.len())
	}
	// A set renews the TTL.
	l.set("long", val("l2"), time.Minute, now.Add(50*time.Second))
	if _, ok := l.get("long", now.Add(100*time.Second)); !ok {
		t.Fatal("long after a renewing set: got a miss, want a hit")
	}
}

func TestRingSpreadsAndIsStable(t *testing.T) {
	r := newRing(4)
	counts := make([]int, 4)
	for i := range 40000 {
		counts[r.shard(fmt.Sprintf("key-%d", i))]++
	}
	for s, n := range counts {
		if n < 6000 || n > 14000 {
			t.Errorf("shard %d owns %d of 40000 keys, want within 6000..14000 (counts %v)", s, n, counts)
		}
	}
	// Consistent: growing the ring to 5 shards moves only keys onto the new
	// shard, never between old ones.
	r5 := newRing(5)
	moved := 0
	for i := range 40000 {
		k := fmt.Sprintf("key-%d", i)
		a, b := r.shard(k), r5.shard(k)
		if a != b {
			if b != 4 {
				t.Fatalf("key %q moved from shard %d to old shard %d, want moves only to the new shard 4", k, a, b)
			}
			moved++
		}
	}
	if moved < 4000 || moved > 12000 {
		t.Errorf("%d of 40000 keys moved to the new shard, want about a fifth", moved)
	}
	if got := newRing(4).shard("stable-key"); got != r.shard("stable-key") {
		t.Errorf("the same key on two rings of 4: shards %d and %d", got, r.shard("stable-key"))
	}
}

func configured(t *testing.T, cfg Config) *Shard {
	t.Helper()
	s := NewShard()
	if r := s.Do(t.Context(), Request{Op: OpConfigure, Config: cfg}); r.Code != CodeOK {
		t.Fatalf("configure: got %+v", r)
	}
	return s
}

func TestShardUnconfiguredAndConflict(t *testing.T) {
	s := NewShard()
	if r := s.Do(t.Context(), Request{Op: OpGet, Key: "k"}); r.Code != CodeUnconfigured {
		t.Fatalf("get on a new shard: got code %d, want CodeUnconfigured", r.Code)
	}
	cfg := Config{Name: "c", Shards: 2, MaxEntries: 10}
	s.Do(t.Context(), Request{Op: OpConfigure, Config: cfg})
	if r := s.Do(t.Context(), Request{Op: OpConfigure, Config: cfg}); r.Code != CodeOK {
		t.Fatalf("the same configuration again: got %+v, want CodeOK", r)
	}
	other := cfg
	other.MaxEntries = 11
	if r := s.Do(t.Context(), Request{Op: OpConfigure, Config: other}); r.Code != CodeConflict {
		t.Fatalf("another configuration: got %+v, want CodeConflict", r)
	}
}

func TestShardAtomicOps(t *testing.T) {
	ctx := t.Context()
	s := configured(t, Config{Name: "c", Shards: 1})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 20 {
				if r := s.Do(ctx, Request{Op: OpIncr, Key: "n", Delta: 1}); r.Code != CodeHit {
					t.Errorf("incr: got %+v", r)
				}
			}
		})
	}
	wg.Wait()
	r := s.Do(ctx, Request{Op: OpGet, Key: "n"})
	if n, err := DecodeInt(r.Val); err != nil || n != 1000 {
		t.Fatalf("after 1000 concurrent increments: got %d, %v; want 1000", n, err)
	}
	// Compare-and-set.
	if r := s.Do(ctx, Request{Op: OpCAS, Key: "x", Absent: true, Val: val("1")}); r.Code != CodeOK {
		t.Fatalf("CAS on an absent key: got %+v, want CodeOK", r)
	}
	if r := s.Do(ctx, Request{Op: OpCAS, Key: "x", Absent: true, Val: val("2")}); r.Code != CodeNotSwapped || string(r.Val.Data) != "1" {
		t.Fatalf("CAS expecting absent on a present key: got %+v, want CodeNotSwapped with the value 1", r)
	}
	if r := s.Do(ctx, Request{Op: OpCAS, Key: "x", Old: val("0"), Val: val("2")}); r.Code != CodeNotSwapped {
		t.Fatalf("CAS with a wrong old value: got %+v, want CodeNotSwapped", r)
	}
	if r := s.Do(ctx, Request{Op: OpCAS, Key: "x", Old: val("1"), Val: val("2")}); r.Code != CodeOK {
		t.Fatalf("CAS with the right old value: got %+v, want CodeOK", r)
	}
	if r := s.Do(ctx, Request{Op: OpIncr, Key: "x", Delta: 1}); r.Code != CodeError {
		t.Fatalf("incr of a non-integer: got %+v, want CodeError", r)
	}
	if r := s.Do(ctx, Request{Op: OpUpdate, Key: "x", Fn: "no-such-fn"}); r.Code != CodeError {
		t.Fatalf("update with an unregistered function: got %+v, want CodeError", r)
	}
}

var appendCalls atomic.Int64

func init() {
	RegisterUpdate("cachetest.append", func(old Value, ok bool, arg Value) (Value, bool, error) {
		appendCalls.Add(1)
		if string(arg.Data) == "drop" {
			return Value{}, true, nil
		}
		if string(arg.Data) == "panic" {
			panic("boom")
		}
		return Value{Enc: arg.Enc, Data: append(append([]byte{}, old.Data...), arg.Data...)}, false, nil
	})
}

func TestShardUpdate(t *testing.T) {
	ctx := t.Context()
	s := configured(t, Config{Name: "c", Shards: 1})
	for _, part := range []string{"a", "b", "c"} {
		s.Do(ctx, Request{Op: OpUpdate, Key: "k", Fn: "cachetest.append", Val: val(part)})
	}
	if r := s.Do(ctx, Request{Op: OpGet, Key: "k"}); string(r.Val.Data) != "abc" {
		t.Fatalf("after three appends: got %q, want %q", r.Val.Data, "abc")
	}
	if r := s.Do(ctx, Request{Op: OpUpdate, Key: "k", Fn: "cachetest.append", Val: val("panic")}); r.Code != CodeError {
		t.Fatalf("a panicking update: got %+v, want CodeError", r)
	}
	if r := s.Do(ctx, Request{Op: OpUpdate, Key: "k", Fn: "cachetest.append", Val: val("drop")}); r.Code != CodeMiss {
		t.Fatalf("an update that drops: got %+v, want CodeMiss", r)
	}
	if r := s.Do(ctx, Request{Op: OpGet, Key: "k"}); r.Code != CodeMiss {
		t.Fatalf("get after a drop: got %+v, want CodeMiss", r)
	}
}

// TestShardLeases checks the compute leases: one lease per key while it is
// held (others get CodePending), the value once fulfilled, a new lease once
// one is abandoned or has expired.
func TestShardLeases(t *testing.T) {
	ctx := t.Context()
	s := configured(t, Config{Name: "c", Shards: 1})
	first := s.Do(ctx, Request{Op: OpAcquire, Key: "k", LeaseMs: 5000})
	if first.Code != CodeLease {
		t.Fatalf("first acquire: got %+v, want CodeLease", first)
	}
	if r := s.Do(ctx, Request{Op: OpAcquire, Key: "k"}); r.Code != CodePending || r.Int <= 0 || r.Int > 5000 {
		t.Fatalf("second acquire: got %+v, want CodePending with the lease's remaining 0..5000 ms", r)
	}
	s.Do(ctx, Request{Op: OpFulfill, Key: "k", Lease: first.Lease, Val: val("v")})
	if r := s.Do(ctx, Request{Op: OpAcquire, Key: "k"}); r.Code != CodeHit || string(r.Val.Data) != "v" {
		t.Fatalf("acquire after the fulfil: got %+v, want a hit of v", r)
	}
	// Abandon passes the lease to the next caller.
	a := s.Do(ctx, Request{Op: OpAcquire, Key: "k2"})
	s.Do(ctx, Request{Op: OpAbandon, Key: "k2", Lease: a.Lease})
	if r := s.Do(ctx, Request{Op: OpAcquire, Key: "k2"}); r.Code != CodeLease || r.Lease == a.Lease {
		t.Fatalf("acquire after an abandon: got %+v, want a new lease", r)
	}
	// An expired lease (its holder died) goes to the next caller; the
	// dead holder can no longer renew it, and its abandon ends nothing.
	clock := time.Now()
	s.mu.Lock()
	s.now = func() time.Time { return clock }
	s.mu.Unlock()
	e := s.Do(ctx, Request{Op: OpAcquire, Key: "k3", LeaseMs: 1000})
	clock = clock.Add(1001 * time.Millisecond)
	n := s.Do(ctx, Request{Op: OpAcquire, Key: "k3"})
	if n.Code != CodeLease || n.Lease == e.Lease {
		t.Fatalf("acquire after the lease expired: got %+v, want a new lease", n)
	}
	if r := s.Do(ctx, Request{Op: OpRenew, Key: "k3", Lease: e.Lease}); r.Code != CodeLeaseLost {
		t.Fatalf("renew of the expired lease: got %+v, want CodeLeaseLost", r)
	}
	s.Do(ctx, Request{Op: OpAbandon, Key: "k3", Lease: e.Lease})
	if r := s.Do(ctx, Request{Op: OpAcquire, Key: "k3"}); r.Code != CodePending {
		t.Fatalf("acquire after the dead holder's abandon: got %+v, want CodePending (the live lease stands)", r)
	}
	if r := s.Do(ctx, Request{Op: OpRenew, Key: "k3", Lease: n.Lease}); r.Code != CodeOK {
		t.Fatalf("renew of the live lease: got %+v, want CodeOK", r)
	}
	st := s.Do(ctx, Request{Op: OpStats}).Stats
	if st.Computes != 5 {
		t.Fatalf("computes: got %d, want 5 (k once, k2 and k3 twice)", st.Computes)
	}
}

// TestShardComputeOnce: 100 concurrent callers of one missing key, each
// computing when granted the lease; exactly one computes.
func TestShardComputeOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := configured(t, Config{Name: "c", Shards: 1})
	var computed atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			for {
				r := s.Do(ctx, Request{Op: OpAcquire, Key: "k"})
				switch r.Code {
				case CodeHit:
					return
				case CodeLease:
					computed.Add(1)
					s.Do(ctx, Request{Op: OpFulfill, Key: "k", Lease: r.Lease, Val: val("v")})
					return
				case CodePending:
					if ctx.Err() != nil {
						t.Error("timed out")
						return
					}
					runtime.Gosched() // ask again (Client.Acquire backs off)
				default:
					t.Errorf("acquire: got %+v", r)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := computed.Load(); n != 1 {
		t.Fatalf("computations: got %d, want 1", n)
	}
}
