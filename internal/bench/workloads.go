package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/objectstore"
	pb "github.com/goray/goray/proto/goray/v1"
	goray "github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// benchNamespace is the namespace of the benchmark's named actors.
const benchNamespace = "goray-bench"

// okValue is Ray's small value: 2 bytes.
var okValue = []byte("ok")

// Server is Ray's microbenchmark Actor: it answers small values and, as a
// "driver" of multi_client_tasks_async, submits tasks itself.
type Server struct{}

// SmallValue returns 2 bytes.
func (*Server) SmallValue(context.Context) ([]byte, error) { return okValue, nil }

// SmallValueArg takes an argument (a put ref at the caller) and returns 2
// bytes.
func (*Server) SmallValueArg(context.Context, int) ([]byte, error) { return okValue, nil }

// SubmitBatch submits n small tasks and gets every result.
func (*Server) SubmitBatch(ctx context.Context, n int) (int, error) {
	refs := make([]objectstore.Ref[[]byte], n)
	for i := range refs {
		refs[i] = smallValue.Remote(ctx)
	}
	return n, getAll(ctx, refs)
}

// batch asks a Client to call each named Server N times.
type batch struct {
	Servers []string `msgpack:"servers"`
	N       int      `msgpack:"n"`
	// Arg passes a ref of a value put once per batch to every call.
	Arg bool `msgpack:"arg"`
	// RoundRobin makes call i go to server i%len(Servers) (N calls in all);
	// otherwise each server gets N calls.
	RoundRobin bool `msgpack:"round_robin"`
}

// Client is Ray's microbenchmark Client: an actor that calls Servers.
type Client struct {
	mu      sync.Mutex
	servers map[string]actor.Handle[Server]
}

// CallBatch runs one batch of calls and gets every result.
func (c *Client) CallBatch(ctx context.Context, b batch) (int, error) {
	return callBatch(ctx, &c.mu, &c.servers, b)
}

// callBatch is CallBatch, shared with the n_n task: servers caches handles.
func callBatch(ctx context.Context, mu *sync.Mutex, servers *map[string]actor.Handle[Server], b batch) (int, error) {
	hs := make([]actor.Handle[Server], len(b.Servers))
	mu.Lock()
	if *servers == nil {
		*servers = map[string]actor.Handle[Server]{}
	}
	for i, name := range b.Servers {
		h, ok := (*servers)[name]
		if !ok {
			var err error
			if h, err = actor.Get(ctx, serverType, name, actor.WithNamespace(benchNamespace)); err != nil {
				mu.Unlock()
				return 0, err
			}
			(*servers)[name] = h
		}
		hs[i] = h
	}
	mu.Unlock()
	var arg objectstore.Ref[int]
	if b.Arg {
		var err error
		if arg, err = objectstore.Put(ctx, 0); err != nil {
			return 0, err
		}
	}
	call := func(h actor.Handle[Server]) objectstore.Ref[[]byte] {
		if b.Arg {
			return serverSmallValueArg.Remote(ctx, h, arg)
		}
		return serverSmallValue.Remote(ctx, h)
	}
	var refs []objectstore.Ref[[]byte]
	if b.RoundRobin {
		refs = make([]objectstore.Ref[[]byte], 0, b.N)
		for i := range b.N {
			refs = append(refs, call(hs[i%len(hs)]))
		}
	} else {
		refs = make([]objectstore.Ref[[]byte], 0, b.N*len(hs))
		for _, h := range hs {
			for range b.N {
				refs = append(refs, call(h))
			}
		}
	}
	return len(refs), getAll(ctx, refs)
}

// Producer makes large objects where it runs (cross_node_get_gigabytes).
type Producer struct{ buf []byte }

// Make returns size bytes; the result lives in this node's object store.
func (p *Producer) Make(_ context.Context, size int) ([]byte, error) {
	if len(p.buf) != size {
		p.buf = filled(size)
	}
	return p.buf, nil
}

var (
	serverType          = actor.Register("goray.bench.server", func() *Server { return &Server{} })
	serverSmallValue    = actor.Method0(serverType, "small_value", (*Server).SmallValue)
	serverSmallValueArg = actor.Method1(serverType, "small_value_arg", (*Server).SmallValueArg)
	serverSubmitBatch   = actor.Method1(serverType, "submit_batch", (*Server).SubmitBatch)

	clientType      = actor.Register("goray.bench.client", func() *Client { return &Client{} })
	clientCallBatch = actor.Method1(clientType, "call_batch", (*Client).CallBatch)

	producerType = actor.Register("goray.bench.producer", func() *Producer { return &Producer{} })
	producerMake = actor.Method1(producerType, "make", (*Producer).Make)

	smallValue = task.Register0("goray.bench.small_value", func(context.Context) ([]byte, error) { return okValue, nil })

	putSmall = task.Register1("goray.bench.put_small", func(ctx context.Context, n int) (int, error) {
		for range n {
			if _, err := objectstore.Put(ctx, 0); err != nil {
				return 0, err
			}
		}
		return n, nil
	})

	putLarge = task.Register2("goray.bench.put_large", func(ctx context.Context, size, count int) (int, error) {
		buf := largeBuffer(size)
		for range count {
			ref, err := objectstore.Put(ctx, buf)
			if err != nil {
				return 0, err
			}
			ref.Release()
		}
		return count, nil
	})

	makeRefs = task.Register1("goray.bench.make_refs", func(ctx context.Context, n int) ([]objectstore.Ref[int], error) {
		out := make([]objectstore.Ref[int], n)
		for i := range out {
			r, err := objectstore.Put(ctx, 1)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	})

	nnWork = task.Register1("goray.bench.nn_work", func(ctx context.Context, b batch) (int, error) {
		var mu sync.Mutex
		var servers map[string]actor.Handle[Server]
		return callBatch(ctx, &mu, &servers, b)
	})
)

// largeBuffer is a per-process buffer of size bytes, filled once, so that
// the put workloads measure the put and not the allocation.
var largeBuffer = func() func(int) []byte {
	var mu sync.Mutex
	var buf []byte
	return func(size int) []byte {
		mu.Lock()
		defer mu.Unlock()
		if len(buf) != size {
			buf = filled(size)
		}
		return buf
	}
}()

func filled(size int) []byte {
	b := make([]byte, size)
	for i := 0; i < size; i += 4096 {
		b[i] = byte(i >> 12)
	}
	return b
}

func getAll[T any](ctx context.Context, refs []objectstore.Ref[T]) error {
	for _, r := range refs {
		if _, err := r.Get(ctx); err != nil {
			return err
		}
	}
	return nil
}

// nActors is BENCHMARKS.md's n: half the machine's cores, rounded up, at
// least 2.
func nActors() int { return max(2, (goruntime.NumCPU()+1)/2) }

// uniqueName makes actor names unique to one setup.
func uniqueName(prefix string, i int) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%d", prefix, hex.EncodeToString(b[:]), i)
}

// sizes are the workload sizes of a full and of a quick run.
type sizes struct {
	transfer      int // bulk, memcpy and cross-node objects
	putLarge      int // single_client_put_gigabytes
	multiPutSize  int // multi_client_put_gigabytes: one put
	multiPutCount int // multi_client_put_gigabytes: puts per task
	batch         int // tasks or calls of one async operation
	multiTasks    int // multi_client_tasks_async: tasks per driver actor
	oneToN        int // 1_n_actor_calls_async: calls per actor
	nn            int // n_n_actor_calls_async: calls per caller
	nnArg         int // n_n_actor_calls_with_arg_async: calls per pair
	refs          int // single_client_get_object_containing_10k_refs
}

var (
	fullSizes = sizes{transfer: 256 << 20, putLarge: 800e6, multiPutSize: 80e6, multiPutCount: 10,
		batch: 1000, multiTasks: 10000, oneToN: 5000, nn: 5000, nnArg: 1000, refs: 10000}
	quickSizes = sizes{transfer: 16 << 20, putLarge: 40e6, multiPutSize: 4e6, multiPutCount: 1,
		batch: 1000, multiTasks: 500, oneToN: 200, nn: 200, nnArg: 100, refs: 10000}
)

const (
	goalSyncTask  = "≥ 0.6 × grpc_stream_pingpong_seq"
	goalSyncActor = "≥ 0.8 × grpc_stream_pingpong_seq"
	goalAsyncTask = "≥ 0.15 × grpc_stream_pipelined"
	goalAsyncAct  = "≥ 0.3 × grpc_stream_pipelined"
	goalCalls     = "≥ 100,000 ops/s"
	goalPutGB     = "≥ 0.8 × memcpy_gigabytes"
	goalCrossNode = "≥ 1.0 × grpc_bulk_gigabytes"
)

// spawnServers spawns n named Servers.
func spawnServers(ctx context.Context, n int, opts ...actor.Option) ([]actor.Handle[Server], []string, error) {
	hs := make([]actor.Handle[Server], n)
	names := make([]string, n)
	for i := range hs {
		names[i] = uniqueName("server", i)
		var err error
		if hs[i], err = actor.Spawn(ctx, serverType, append(opts, actor.WithName(names[i]))...); err != nil {
			return nil, nil, err
		}
	}
	return hs, names, nil
}

// jobSetup wraps a setup that needs a goray job: it starts a fresh one and
// ends it in the cleanup.
func jobSetup(f func(ctx context.Context, r *runner) (op, error)) func(context.Context, *runner) (op, func(), error) {
	return func(ctx context.Context, r *runner) (op, func(), error) {
		end, err := r.job(ctx)
		if err != nil {
			return nil, nil, err
		}
		fn, err := f(ctx, r)
		if err != nil {
			end()
			return nil, nil, err
		}
		return fn, end, nil
	}
}

func workloadSpecs(sz sizes) []*spec {
	n := nActors()
	gbOf := func(bytes int) float64 { return float64(bytes) / gb }
	return append([]*spec{
		{name: "single_client_get_calls", unit: UnitOps, per: 1, goal: goalCalls, ray: 10556,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				ref, err := objectstore.Put(ctx, 0)
				if err != nil {
					return nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := ref.Get(ctx)
					return err
				}, nil
			})},
		{name: "single_client_put_calls", unit: UnitOps, per: 1, goal: goalCalls, ray: 5299, freshPerTrial: true,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := objectstore.Put(ctx, 0)
					return err
				}, nil
			})},
		{name: "multi_client_put_calls", unit: UnitOps, per: 1000, ray: 12379, freshPerTrial: true,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				return func(ctx context.Context, _ *stopwatch) error {
					refs := make([]objectstore.Ref[int], 10)
					for i := range refs {
						refs[i] = putSmall.Remote(ctx, objectstore.Val(100))
					}
					return getAll(ctx, refs)
				}, nil
			})},
		{name: "single_client_put_gigabytes", unit: UnitGB, per: gbOf(sz.putLarge), baseline: memcpyGigabytes, goal: goalPutGB, ray: 21.3,
			freshPerTrial: true,
			note:          fmt.Sprintf("one put of a %d MB []byte", sz.putLarge/1e6),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				buf := largeBuffer(sz.putLarge)
				return func(ctx context.Context, _ *stopwatch) error {
					ref, err := objectstore.Put(ctx, buf)
					if err == nil {
						ref.Release()
					}
					return err
				}, nil
			})},
		{name: "multi_client_put_gigabytes", unit: UnitGB, per: gbOf(10 * sz.multiPutCount * sz.multiPutSize), baseline: memcpyGigabytes, ray: 32.1,
			freshPerTrial: true,
			note: fmt.Sprintf("10 tasks × %d puts of %d MB, each ref released after its put (as Ray's reference counting frees it)",
				sz.multiPutCount, sz.multiPutSize/1e6),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				return func(ctx context.Context, _ *stopwatch) error {
					refs := make([]objectstore.Ref[int], 10)
					for i := range refs {
						refs[i] = putLarge.Remote(ctx, objectstore.Val(sz.multiPutSize), objectstore.Val(sz.multiPutCount))
					}
					return getAll(ctx, refs)
				}, nil
			})},
		{name: "single_client_tasks_and_get_batch", unit: UnitOps, per: 1, ray: 7.93,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				return func(ctx context.Context, _ *stopwatch) error {
					return getAll(ctx, submitSmall(ctx, sz.batch))
				}, nil
			})},
		{name: "single_client_get_object_containing_10k_refs", unit: UnitOps, per: 1, ray: 13.5,
			note: "each Get decodes 10,000 live refs and registers them with their owner, as Ray's borrowing does",
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				ref := makeRefs.Remote(ctx, objectstore.Val(sz.refs))
				if _, err := ref.Get(ctx); err != nil {
					return nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					refs, err := ref.Get(ctx)
					if err != nil {
						return err
					}
					if len(refs) != sz.refs {
						return fmt.Errorf("got %d refs, want %d", len(refs), sz.refs)
					}
					return nil
				}, nil
			})},
		{name: "single_client_wait_1k_refs", unit: UnitOps, per: 1, ray: 5.48,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				return func(ctx context.Context, _ *stopwatch) error {
					notReady := submitSmall(ctx, sz.batch)
					for len(notReady) > 0 {
						var err error
						if _, notReady, err = objectstore.Wait(ctx, notReady, 1); err != nil {
							return err
						}
					}
					return nil
				}, nil
			})},
		{name: "single_client_tasks_sync", unit: UnitOps, per: 1, baseline: grpcPingPongSeq, goal: goalSyncTask, ray: 1003,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := smallValue.Remote(ctx).Get(ctx)
					return err
				}, nil
			})},
		{name: "single_client_tasks_async", unit: UnitOps, per: float64(sz.batch), baseline: grpcPipelined, goal: goalAsyncTask, ray: 7813,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				return func(ctx context.Context, _ *stopwatch) error {
					return getAll(ctx, submitSmall(ctx, sz.batch))
				}, nil
			})},
		{name: "multi_client_tasks_async", unit: UnitOps, per: float64(4 * sz.multiTasks), baseline: grpcPipelined, ray: 23246,
			note: fmt.Sprintf("4 actors each submit %d tasks and get them", sz.multiTasks),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				hs, _, err := spawnServers(ctx, 4)
				if err != nil {
					return nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					refs := make([]objectstore.Ref[int], len(hs))
					for i, h := range hs {
						refs[i] = serverSubmitBatch.Remote(ctx, h, objectstore.Val(sz.multiTasks))
					}
					return getAll(ctx, refs)
				}, nil
			})},
		{name: "1_1_actor_calls_sync", unit: UnitOps, per: 1, baseline: grpcPingPongSeq, goal: goalSyncActor, ray: 2095,
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				hs, _, err := spawnServers(ctx, 1)
				if err != nil {
					return nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := serverSmallValue.Remote(ctx, hs[0]).Get(ctx)
					return err
				}, nil
			})},
		actorAsync("1_1_actor_calls_async", sz, 1, goalAsyncAct, 9231),
		actorAsync("1_1_actor_calls_concurrent", sz, 16, "", 5207),
		{name: "1_n_actor_calls_async", unit: UnitOps, per: float64(sz.oneToN * n), baseline: grpcPipelined, ray: 8687,
			note: fmt.Sprintf("one client actor → %d actors, %d calls each", n, sz.oneToN),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				_, names, err := spawnServers(ctx, n)
				if err != nil {
					return nil, err
				}
				c, err := actor.Spawn(ctx, clientType)
				if err != nil {
					return nil, err
				}
				b := batch{Servers: names, N: sz.oneToN}
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := clientCallBatch.Remote(ctx, c, objectstore.Val(b)).Get(ctx)
					return err
				}, nil
			})},
		{name: "n_n_actor_calls_async", unit: UnitOps, per: float64(sz.nn * n), baseline: grpcPipelined, ray: 26644,
			note: fmt.Sprintf("%d caller tasks, each %d calls round-robin over %d actors", n, sz.nn, n),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				_, names, err := spawnServers(ctx, n)
				if err != nil {
					return nil, err
				}
				b := batch{Servers: names, N: sz.nn, RoundRobin: true}
				return func(ctx context.Context, _ *stopwatch) error {
					refs := make([]objectstore.Ref[int], n)
					for i := range refs {
						refs[i] = nnWork.Remote(ctx, objectstore.Val(b))
					}
					return getAll(ctx, refs)
				}, nil
			})},
		{name: "n_n_actor_calls_with_arg_async", unit: UnitOps, per: float64(sz.nnArg * n), baseline: grpcPipelined, ray: 2704,
			note: fmt.Sprintf("%d client→actor pairs, %d calls each passing a put ref", n, sz.nnArg),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				_, names, err := spawnServers(ctx, n)
				if err != nil {
					return nil, err
				}
				clients := make([]actor.Handle[Client], n)
				for i := range clients {
					if clients[i], err = actor.Spawn(ctx, clientType); err != nil {
						return nil, err
					}
				}
				return func(ctx context.Context, _ *stopwatch) error {
					refs := make([]objectstore.Ref[int], n)
					for i, c := range clients {
						refs[i] = clientCallBatch.Remote(ctx, c, objectstore.Val(batch{Servers: names[i : i+1], N: sz.nnArg, Arg: true}))
					}
					return getAll(ctx, refs)
				}, nil
			})},
		{name: "placement_group_create_removal", unit: UnitOps, per: pgPerOp, ray: 851,
			note:  "through the head's placement group RPCs (no SDK for placement groups yet)",
			setup: jobSetup(setupPlacementGroups)},
		{name: "cross_node_get_gigabytes", unit: UnitGB, per: gbOf(sz.transfer), baseline: grpcBulkGigabytes, goal: goalCrossNode,
			freshPerTrial: true,
			note:          fmt.Sprintf("get of a %d MiB object made on the other raylet process (pull, then read)", sz.transfer>>20),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				p, err := actor.Spawn(ctx, producerType, actor.WithResources(map[string]float64{remoteResource: 1}))
				if err != nil {
					if errors.Is(err, goray.ErrInfeasible) {
						return nil, unavailable("no second node with resource %q to make the object on", remoteResource)
					}
					return nil, err
				}
				return func(ctx context.Context, w *stopwatch) error {
					w.Pause()
					ref := producerMake.Remote(ctx, p, objectstore.Val(sz.transfer))
					if _, _, err := objectstore.Wait(ctx, []objectstore.Ref[[]byte]{ref}, 1); err != nil {
						return err
					}
					w.Resume()
					// Ray's get of a large buffer is zero-copy and read-only:
					// objectstore.View is goray's.
					b, err := objectstore.View(ctx, ref)
					if err != nil {
						return err
					}
					if len(b) != sz.transfer {
						return fmt.Errorf("got %d bytes, want %d", len(b), sz.transfer)
					}
					w.Pause()
					ref.Release() // both copies, as Ray's reference counting would
					w.Resume()
					return nil
				}, nil
			})},
	}, append(append(append(spillSpecs(sz), fileSpecs(sz)...), coordSpecs()...), cacheSpecs(sz)...)...)
}

func actorAsync(name string, sz sizes, conc int, goal string, ray float64) *spec {
	return &spec{name: name, unit: UnitOps, per: float64(sz.batch), baseline: grpcPipelined, goal: goal, ray: ray,
		setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
			hs, _, err := spawnServers(ctx, 1, actor.WithMaxConcurrency(conc))
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context, _ *stopwatch) error {
				refs := make([]objectstore.Ref[[]byte], sz.batch)
				for i := range refs {
					refs[i] = serverSmallValue.Remote(ctx, hs[0])
				}
				return getAll(ctx, refs)
			}, nil
		})}
}

func submitSmall(ctx context.Context, n int) []objectstore.Ref[[]byte] {
	refs := make([]objectstore.Ref[[]byte], n)
	for i := range refs {
		refs[i] = smallValue.Remote(ctx)
	}
	return refs
}

// pgPerOp is how many placement groups one operation creates, waits for and
// removes (Ray's figure counts groups).
const pgPerOp = 100

// setupPlacementGroups measures Ray's placement group create/removal: 100
// one-bundle groups created, waited for, then removed. There is no SDK for
// placement groups yet, so it calls the head's RPCs as an SDK would.
func setupPlacementGroups(ctx context.Context, _ *runner) (op, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	head := c.Head()
	bundle := []*pb.Resources{{Amounts: map[string]float64{"CPU": 0.001}}}
	create := func(ctx context.Context) ([]byte, error) {
		id := ids.NewPlacementGroupID(c.JobID())
		_, err := head.CreatePlacementGroup(ctx, &pb.CreatePlacementGroupRequest{PlacementGroupId: id[:],
			Strategy: pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK, Bundles: bundle, JobId: id[:ids.JobIDSize]})
		if err != nil {
			if status.Code(err) == codes.Unimplemented {
				return nil, unavailable("placement groups not implemented")
			}
			return nil, err
		}
		return id[:], nil
	}
	if id, err := create(ctx); err != nil {
		return nil, err
	} else if _, err := head.RemovePlacementGroup(ctx, &pb.RemovePlacementGroupRequest{PlacementGroupId: id}); err != nil {
		return nil, err
	}
	return func(ctx context.Context, _ *stopwatch) error {
		pgs := make([][]byte, pgPerOp)
		for i := range pgs {
			var err error
			if pgs[i], err = create(ctx); err != nil {
				return err
			}
		}
		for _, id := range pgs {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			resp, err := head.GetPlacementGroup(wctx, &pb.GetPlacementGroupRequest{PlacementGroupId: id, Wait: true})
			cancel()
			if err != nil {
				return err
			}
			if st := resp.GetPlacementGroup().GetState(); st != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
				return fmt.Errorf("placement group %x: state %v (%s), want created", id, st, resp.GetPlacementGroup().GetReason())
			}
		}
		for _, id := range pgs {
			if _, err := head.RemovePlacementGroup(ctx, &pb.RemovePlacementGroupRequest{PlacementGroupId: id}); err != nil {
				return err
			}
		}
		return nil
	}, nil
}
