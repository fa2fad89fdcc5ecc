package cache_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/goray/goray/cache"
	icache "github.com/goray/goray/internal/cache"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testenv"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/runtime"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type user struct {
	Name string
	Age  int
}

// newCache makes a cache of a name unique to the test, destroyed when the
// test ends.
func newCache[V any](t *testing.T, opts ...cache.Option) *cache.Cache[V] {
	t.Helper()
	c, err := cache.New[V](t.Context(), t.Name(), opts...)
	if err != nil {
		t.Fatalf("cache.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Destroy(ctx); err != nil {
			t.Errorf("destroy: %v", err)
		}
		c.Close()
	})
	return c
}

func TestSetGetDelete(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[user](t, cache.WithShards(3))
	if _, ok, err := c.Get(ctx, "nobody"); ok || err != nil {
		t.Fatalf("get of a missing key: got ok=%v err=%v, want a miss", ok, err)
	}
	for i := range 30 {
		if err := c.Set(ctx, fmt.Sprintf("u%d", i), user{fmt.Sprintf("n%d", i), i}); err != nil {
			t.Fatalf("set: %v", err)
		}
	}
	for i := range 30 {
		u, ok, err := c.Get(ctx, fmt.Sprintf("u%d", i))
		if err != nil || !ok || u != (user{fmt.Sprintf("n%d", i), i}) {
			t.Fatalf("get u%d: got %+v, %v, %v; want n%d", i, u, ok, err, i)
		}
	}
	if had, err := c.Delete(ctx, "u3"); !had || err != nil {
		t.Fatalf("delete of a present key: got %v, %v; want true", had, err)
	}
	if had, err := c.Delete(ctx, "u3"); had || err != nil {
		t.Fatalf("delete of a deleted key: got %v, %v; want false", had, err)
	}
	if _, ok, _ := c.Get(ctx, "u3"); ok {
		t.Fatal("get after delete: got a hit, want a miss")
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.Entries != 29 || st.Total.Hits != 30 || st.Total.Misses != 2 || len(st.Shards) != 3 {
		t.Fatalf("stats: got %+v, want 29 entries, 30 hits, 2 misses over 3 shards", st)
	}
	used := 0
	for _, s := range st.Shards {
		if s.Entries > 0 {
			used++
		}
		if s.Node != runtime.CurrentNodeID() {
			t.Errorf("shard on node %q, want the only node %q", s.Node, runtime.CurrentNodeID())
		}
	}
	if used != 3 {
		t.Errorf("keys spread over %d of 3 shards, want all 3", used)
	}
	// The wrong type is an error, not a zero value.
	ints, err := cache.Open[int](ctx, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer ints.Close()
	if _, _, err := ints.Get(ctx, "u1"); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Fatalf("get of a struct as an int: got %v, want ErrInvalidArgument", err)
	}
}

// TestLRUEviction: one shard of 3 entries; a read makes a key recent.
func TestLRUEviction(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[string](t, cache.WithShards(1), cache.WithMaxEntries(3))
	for _, k := range []string{"a", "b", "c"} {
		if err := c.Set(ctx, k, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := c.Get(ctx, "a"); !ok {
		t.Fatal("a: got a miss, want a hit")
	}
	if err := c.Set(ctx, "d", "d"); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok, _ := c.Get(ctx, k); ok != want {
			t.Errorf("%s after the eviction: got present=%v, want %v", k, ok, want)
		}
	}
	st, _ := c.Stats(ctx)
	if st.Total.Evictions != 1 || st.Total.Entries != 3 {
		t.Fatalf("stats: got %d evictions and %d entries, want 1 and 3", st.Total.Evictions, st.Total.Entries)
	}
}

func TestTTL(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[int](t, cache.WithShards(2), cache.WithTTL(time.Hour))
	if err := c.Set(ctx, "short", 1, cache.SetTTL(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "default", 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "forever", 3, cache.SetTTL(0)); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 30*time.Second, "the short entry to expire", func() bool {
		_, ok, err := c.Get(ctx, "short")
		return err == nil && !ok
	})
	for k, want := range map[string]int{"default": 2, "forever": 3} {
		if v, ok, err := c.Get(ctx, k); !ok || err != nil || v != want {
			t.Errorf("%s after short expired: got %d, %v, %v; want %d", k, v, ok, err, want)
		}
	}
	st, _ := c.Stats(ctx)
	if st.Total.Expirations != 1 {
		t.Fatalf("expirations: got %d, want 1", st.Total.Expirations)
	}
}

// TestGetOrComputeOnce: 100 concurrent callers of a missing key; one
// computes, all get its value.
func TestGetOrComputeOnce(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[string](t, cache.WithShards(2))
	var computed atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make([]string, 100)
	errs := make([]error, 100)
	for i := range 100 {
		wg.Go(func() {
			results[i], errs[i] = c.GetOrCompute(ctx, "expensive", func(ctx context.Context) (string, error) {
				n := computed.Add(1)
				<-release // the computation takes until every caller asked
				return fmt.Sprintf("value-%d", n), nil
			})
		})
	}
	// Let the computation finish once every caller is waiting or computing.
	testwait.Eventually(t, 30*time.Second, "a computation to start", func() bool { return computed.Load() > 0 })
	close(release)
	wg.Wait()
	for i := range 100 {
		if errs[i] != nil || results[i] != "value-1" {
			t.Fatalf("caller %d: got %q, %v; want value-1", i, results[i], errs[i])
		}
	}
	if n := computed.Load(); n != 1 {
		t.Fatalf("computations: got %d, want 1", n)
	}
	st, _ := c.Stats(ctx)
	if st.Total.Computes != 1 {
		t.Fatalf("stats computes: got %d, want 1", st.Total.Computes)
	}
	// A hit afterwards does not compute.
	v, err := c.GetOrCompute(ctx, "expensive", func(context.Context) (string, error) { return "again", nil })
	if err != nil || v != "value-1" {
		t.Fatalf("get-or-compute of a cached key: got %q, %v; want value-1", v, err)
	}
}

// TestGetOrComputeFailurePassesTheLease: the computing caller fails; a
// waiting caller computes next, and the failure reaches only the first.
func TestGetOrComputeFailurePassesTheLease(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[int](t, cache.WithShards(1))
	started, fail := make(chan struct{}), make(chan struct{})
	boom := errors.New("boom")
	first := make(chan error, 1)
	go func() {
		_, err := c.GetOrCompute(ctx, "k", func(context.Context) (int, error) {
			close(started)
			<-fail
			return 0, boom
		})
		first <- err
	}()
	<-started
	second := make(chan int, 1)
	go func() {
		v, err := c.GetOrCompute(ctx, "k", func(context.Context) (int, error) { return 7, nil })
		if err != nil {
			t.Errorf("second caller: %v", err)
		}
		second <- v
	}()
	// The second caller waits on the lease (it cannot compute yet).
	testwait.Eventually(t, 30*time.Second, "the second caller to wait", func() bool {
		st, err := c.Stats(ctx)
		return err == nil && st.Total.Computes == 1
	})
	close(fail)
	if err := <-first; !errors.Is(err, boom) {
		t.Fatalf("first caller: got %v, want boom", err)
	}
	if v := <-second; v != 7 {
		t.Fatalf("second caller: got %d, want 7 (it computes after the first failed)", v)
	}
	if v, ok, _ := c.Get(ctx, "k"); !ok || v != 7 {
		t.Fatalf("get: got %d, %v; want 7", v, ok)
	}
}

var appendUpdate = cache.RegisterUpdate("cachetest.append", func(old []string, _ bool, s string) ([]string, bool, error) {
	if s == "" {
		return nil, false, errors.New("empty string")
	}
	return append(old, s), false, nil
})

func TestAtomicOps(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	counters := newCache[int64](t, cache.WithShards(2))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 10 {
				if _, err := counters.Incr(ctx, "hits", 1); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n, ok, err := counters.Get(ctx, "hits"); n != 200 || !ok || err != nil {
		t.Fatalf("after 200 concurrent increments: got %d, %v, %v; want 200", n, ok, err)
	}
	if ok, err := counters.SetIfAbsent(ctx, "hits", 5); ok || err != nil {
		t.Fatalf("SetIfAbsent of a present key: got %v, %v; want false", ok, err)
	}
	if ok, err := counters.CompareAndSwap(ctx, "hits", 200, 1000); !ok || err != nil {
		t.Fatalf("CompareAndSwap 200→1000: got %v, %v; want true", ok, err)
	}
	if ok, err := counters.CompareAndSwap(ctx, "hits", 200, 5); ok || err != nil {
		t.Fatalf("CompareAndSwap from a stale value: got %v, %v; want false", ok, err)
	}
	lists := newCache[[]string](t, cache.WithShards(2))
	for _, s := range []string{"a", "b", "c"} {
		if _, _, err := cache.Update(ctx, lists, appendUpdate, "l", s); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, _ := lists.Get(ctx, "l"); !ok || fmt.Sprint(v) != "[a b c]" {
		t.Fatalf("after three appends: got %v, want [a b c]", v)
	}
	if _, _, err := cache.Update(ctx, lists, appendUpdate, "l", ""); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Fatalf("an update that fails: got %v, want ErrInvalidArgument", err)
	}
	if _, err := lists.Incr(ctx, "l", 1); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Fatalf("incr of a list: got %v, want ErrInvalidArgument", err)
	}
}

func TestOpenAndConflict(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[string](t, cache.WithShards(2), cache.WithMaxEntries(10))
	if err := c.Set(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	o, err := cache.Open[string](ctx, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Shards() != 2 {
		t.Fatalf("opened cache: got %d shards, want 2", o.Shards())
	}
	if v, ok, _ := o.Get(ctx, "k"); !ok || v != "v" {
		t.Fatalf("get through the opened cache: got %q, %v; want v", v, ok)
	}
	same, err := cache.New[string](ctx, t.Name(), cache.WithShards(2), cache.WithMaxEntries(10))
	if err != nil {
		t.Fatalf("New with the same configuration: %v", err)
	}
	same.Close()
	if _, err := cache.New[string](ctx, t.Name(), cache.WithShards(2), cache.WithMaxEntries(11)); !errors.Is(err, runtime.ErrAlreadyExists) {
		t.Fatalf("New with another capacity: got %v, want ErrAlreadyExists", err)
	}
	if _, err := cache.Open[string](ctx, "no-such-cache"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Open of a missing cache: got %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "a/b"} {
		if _, err := cache.New[string](ctx, bad); !errors.Is(err, runtime.ErrInvalidArgument) {
			t.Errorf("New(%q): got %v, want ErrInvalidArgument", bad, err)
		}
	}
	if _, _, err := c.Get(ctx, string(make([]byte, 5000))); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Errorf("a 5000-byte key: got %v, want ErrInvalidArgument", err)
	}
}

func TestAsyncPipelined(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[int](t, cache.WithShards(3))
	sets := make([]*cache.SetCall, 500)
	for i := range sets {
		sets[i] = c.SetAsync(ctx, fmt.Sprint(i), i)
	}
	for _, s := range sets {
		if err := s.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gets := make([]*cache.GetCall[int], 500)
	for i := range gets {
		gets[i] = c.GetAsync(ctx, fmt.Sprint(i))
	}
	for i, g := range gets {
		if v, ok, err := g.Wait(ctx); v != i || !ok || err != nil {
			t.Fatalf("async get %d: got %d, %v, %v", i, v, ok, err)
		}
	}
}

// TestDataPath: operations on shards go over the shard hosts' streams,
// not as actor calls; pipelined ones share a stream and keep their order.
func TestDataPath(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[int](t, cache.WithShards(2))
	before := icache.DataPathReplies()
	sets := make([]*cache.SetCall, 100)
	for i := range sets {
		sets[i] = c.SetAsync(ctx, "k", i) // one key: the last set wins
	}
	for _, s := range sets {
		if err := s.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, err := c.Get(ctx, "k"); v != 99 || !ok || err != nil {
		t.Fatalf("get after 100 pipelined sets: got %d, %v, %v; want 99 (the sets ran in order)", v, ok, err)
	}
	n, err := c.Incr(ctx, "n", 5)
	if err != nil || n != 5 {
		t.Fatalf("incr: got %d, %v; want 5", n, err)
	}
	if got := icache.DataPathReplies() - before; got < 102 {
		t.Fatalf("%d of 102 operations answered on the data path, want all", got)
	}
	icache.SetRawPath(true)
	t.Cleanup(func() { icache.SetRawPath(false) })
	rawBefore := icache.RawReplies()
	for i := range 10 {
		if err := c.Set(ctx, "r", i); err != nil {
			t.Fatal(err)
		}
	}
	if got := icache.RawReplies() - rawBefore; got != 10 {
		t.Fatalf("%d of 10 synchronous sets answered on the raw path, want all", got)
	}
	// A synchronous operation sent while pipelined ones are in flight runs
	// after them.
	for i := range sets {
		sets[i] = c.SetAsync(ctx, "k", 1000+i)
	}
	if v, ok, err := c.Get(ctx, "k"); v != 1099 || !ok || err != nil {
		t.Fatalf("get right after 100 pipelined sets: got %d, %v, %v; want 1099", v, ok, err)
	}
	for _, s := range sets {
		if err := s.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An operation whose context has ended fails with the context's error;
	// the next one is served.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := c.Get(cctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("get with a cancelled context: got %v, want context.Canceled", err)
	}
	if v, ok, err := c.Get(ctx, "k"); v != 1099 || !ok || err != nil {
		t.Fatalf("get after a cancelled one: got %d, %v, %v; want 1099", v, ok, err)
	}
}

// TestDataPathBadFrames: a shard host answers a malformed frame with an
// error frame and a frame for an actor it does not host with "not here",
// and keeps serving the stream.
func TestDataPathBadFrames(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[int](t, cache.WithShards(1))
	if err := c.Set(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cw.GetActor(ctx, icache.ShardName(t.Name(), 0), "")
	if err != nil {
		t.Fatal(err)
	}
	addr, _, ok := h.Location()
	if !ok {
		t.Fatal("the shard's handle knows no location")
	}
	cc, err := cw.Conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/goray.cache.ShardData/Ops")
	if err != nil {
		t.Fatal(err)
	}
	var other ids.ActorID
	other[0] = 0xff
	frames := []struct {
		frame  []byte
		status byte
	}{
		{[]byte{7}, 2},                      // tag only
		{append([]byte{8}, h.ID[:3]...), 2}, // a short actor ID
		{append(append([]byte{9}, other[:]...), 0, 0x91, 0x01), 1}, // an actor not hosted here
		{append(append([]byte{10}, h.ID[:]...), 0, 0xc1), 2},       // a request that does not decode
	}
	for _, f := range frames {
		if err := st.SendMsg(wrapperspb.Bytes(f.frame)); err != nil {
			t.Fatal(err)
		}
		in := new(wrapperspb.BytesValue)
		if err := st.RecvMsg(in); err != nil {
			t.Fatalf("frame %x: %v", f.frame, err)
		}
		if got := in.GetValue(); len(got) < 2 || got[0] != f.frame[0] || got[1] != f.status {
			t.Fatalf("frame %x: got reply %q, want tag %d and status %d", f.frame, got, f.frame[0], f.status)
		}
	}
	_ = st.CloseSend()
	if v, ok, err := c.Get(ctx, "a"); v != 1 || !ok || err != nil {
		t.Fatalf("get after bad frames: got %d, %v, %v; want 1", v, ok, err)
	}
}

func TestByteCapacity(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[[]byte](t, cache.WithShards(1), cache.WithMaxBytes(10_000))
	for i := range 10 {
		if err := c.Set(ctx, fmt.Sprint(i), make([]byte, 2000)); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := c.Stats(ctx)
	if st.Total.Bytes > 10_000 || st.Total.Entries != 4 || st.Total.Evictions != 6 {
		t.Fatalf("stats: got %d bytes, %d entries, %d evictions; want ≤ 10000 bytes, 4 entries, 6 evictions", st.Total.Bytes, st.Total.Entries, st.Total.Evictions)
	}
	if err := c.Set(ctx, "huge", make([]byte, 20_000)); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Fatalf("a value over the byte capacity: got %v, want ErrInvalidArgument", err)
	}
}

// TestGetOrComputeAfterTheComputingCallerDied: a caller takes the compute
// lease of a key and then never renews, fulfils or abandons it, as a
// process that died would; once its lease runs out a waiting caller
// computes.
func TestGetOrComputeAfterTheComputingCallerDied(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newCache[string](t, cache.WithShards(1))
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := icache.Open(ctx, cw, "", t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, hit, comp, err := raw.Acquire(ctx, "k", 500) // the "dead" caller's lease: 0.5 s, never renewed
	if err != nil || hit || comp.Lease == 0 {
		t.Fatalf("acquire: got hit=%v lease=%d err=%v, want a lease", hit, comp.Lease, err)
	}
	v, err := c.GetOrCompute(ctx, "k", func(context.Context) (string, error) { return "second", nil })
	if err != nil || v != "second" {
		t.Fatalf("get-or-compute after the lease holder went silent: got %q, %v; want second", v, err)
	}
	// The dead caller's late answer changes nothing it should not: its
	// lease is gone.
	if r, err := raw.Do(ctx, icache.Request{Op: icache.OpRenew, Key: "k", Lease: comp.Lease}); err != nil || r.Code != icache.CodeLeaseLost {
		t.Fatalf("renew of the expired lease: got %+v, %v; want CodeLeaseLost", r, err)
	}
	st, _ := c.Stats(ctx)
	if st.Total.Computes != 2 {
		t.Fatalf("computes: got %d, want 2 (the silent caller's and the second's)", st.Total.Computes)
	}
}

// TestRawPathRefuses: a shard host's raw listener closes a connection
// that presents a wrong cluster token, and one that sends a frame longer
// than the bound, and goes on serving the others.
func TestRawPathRefuses(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	icache.SetRawPath(true)
	t.Cleanup(func() { icache.SetRawPath(false) })
	c := newCache[int](t, cache.WithShards(1))
	if err := c.Set(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cw.GetActor(ctx, icache.ShardName(t.Name(), 0), "")
	if err != nil {
		t.Fatal(err)
	}
	addr, _, ok := h.Location()
	if !ok {
		t.Fatal("the shard's handle knows no location")
	}
	cc, err := cw.Conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	port := new(wrapperspb.UInt32Value)
	if err := cc.Invoke(ctx, "/goray.cache.ShardData/RawPort", &emptypb.Empty{}, port); err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(addr)
	rawAddr := net.JoinHostPort(host, fmt.Sprint(port.GetValue()))
	_, token, _, _ := cw.Endpoints()
	hello := func(tok string) []byte {
		b := append([]byte("gorayc1\n"), byte(len(tok)>>8), byte(len(tok)))
		return append(b, tok...)
	}
	huge := []byte{0xff, 0xff, 0xff, 0xff}
	for _, tc := range []struct {
		name string
		send []byte
		ack  bool
	}{
		{"wrong token", hello(token + "x"), false},
		{"oversized frame", append(hello(token), huge...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", rawAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := conn.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.ack {
				var ack [1]byte
				if _, err := io.ReadFull(conn, ack[:]); err != nil || ack[0] != 0 {
					t.Fatalf("handshake with the right token: got %v, %v; want the accepted byte", ack, err)
				}
			}
			var b [1]byte
			if n, err := conn.Read(b[:]); err == nil {
				t.Fatalf("got %d bytes, want the connection closed", n)
			}
		})
	}
	before := icache.RawReplies()
	if v, ok, err := c.Get(ctx, "a"); v != 1 || !ok || err != nil {
		t.Fatalf("get after refused connections: got %d, %v, %v; want 1", v, ok, err)
	}
	if got := icache.RawReplies() - before; got != 1 {
		t.Fatalf("got %d raw replies, want 1", got)
	}
}
