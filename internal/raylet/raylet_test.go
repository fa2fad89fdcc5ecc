package raylet

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startHead starts a head raylet that is stopped when the test ends.
func startHead(t *testing.T, res map[string]float64) *Raylet {
	t.Helper()
	return startTestHead(t, Config{
		Resources: res,
		TokenFile: filepath.Join(t.TempDir(), "token"),
		Logger:    testLogger(t),
		Stderr:    t.Output(),
	}, headOpts{})
}

// startNode starts a raylet joining head, stopped when the test ends.
func startNode(t *testing.T, head *Raylet, res map[string]float64) *Raylet {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := Start(ctx, Config{
		Address:   head.Address(),
		Resources: res,
		TokenFile: head.TokenFile(),
		Logger:    testLogger(t),
		Stderr:    t.Output(),
	})
	if err != nil {
		t.Fatalf("Start node: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

func dial(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	cc, err := rpc.Dial(addr, token)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func nodeClient(t *testing.T, r *Raylet) *rpc.NodeClient {
	return rpc.NewNodeClient(dial(t, r.Address(), r.Token()))
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHeadAndJoinedNodeAreListed(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 2})
	node := startNode(t, head, map[string]float64{"CPU": 1, "gpu": 1})

	if head.Token() == "" || node.Token() != head.Token() {
		t.Fatalf("tokens: head %q, node %q; want equal and non-empty", head.Token(), node.Token())
	}
	sched := rpc.NewHeadClient(dial(t, head.Address(), head.Token()))
	resp, err := sched.ListNodes(callCtx(t), &pb.ListNodesRequest{})
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	got := map[string]*pb.NodeInfo{}
	for _, n := range resp.GetNodes() {
		got[string(n.GetNodeId())] = n
	}
	for _, r := range []*Raylet{head, node} {
		id := r.NodeID()
		n := got[string(id[:])]
		if n == nil {
			t.Fatalf("ListNodes: node %s missing; got %d nodes", id, len(resp.GetNodes()))
		}
		if !n.GetAlive() || n.GetAddress() != r.Address() {
			t.Errorf("node %s: got alive=%v address=%q, want alive at %q", id, n.GetAlive(), n.GetAddress(), r.Address())
		}
	}
	if gpu := got[string(node.nodeID[:])].GetTotal().GetAmounts()["gpu"]; gpu != 1 {
		t.Errorf("joined node total gpu: got %v, want 1", gpu)
	}

	info, err := nodeClient(t, node).GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{})
	if err != nil {
		t.Fatalf("GetNodeInfo: %v", err)
	}
	if !bytes.Equal(info.GetNodeId(), node.nodeID[:]) || info.GetHeadAddress() != head.Address() || info.GetStoreDir() != node.StoreDir() {
		t.Errorf("GetNodeInfo: got %v, want node %s head %s store %s", info, node.NodeID(), head.Address(), node.StoreDir())
	}
}

func TestAuthRequired(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 1})
	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"wrong token", strings.Repeat("ab", 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := dial(t, head.Address(), tc.token)
			_, err := rpc.NewNodeClient(cc).GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{})
			if got := status.Code(err); got != codes.Unauthenticated {
				t.Errorf("NodeService.GetNodeInfo: got %v (%v), want Unauthenticated", got, err)
			}
			_, err = rpc.NewHeadClient(cc).ListNodes(callCtx(t), &pb.ListNodesRequest{})
			if got := status.Code(err); got != codes.Unauthenticated {
				t.Errorf("NodeRegistryService.ListNodes: got %v (%v), want Unauthenticated", got, err)
			}
			st, err := pb.NewObjectTransferServiceClient(cc).Pull(callCtx(t), &pb.PullRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			if got := status.Code(err); got != codes.Unauthenticated {
				t.Errorf("ObjectTransferService.Pull: got %v (%v), want Unauthenticated", got, err)
			}
		})
	}
	t.Run("joining with a wrong token fails", func(t *testing.T) {
		_, err := Start(callCtx(t), Config{Address: head.Address(), Token: strings.Repeat("cd", 32), Logger: testLogger(t)})
		if err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("Start: got %v, want an error about the token", err)
		}
	})
}

func TestJoinWithoutHeadFailsFast(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()

	start := time.Now()
	r, err := Start(t.Context(), Config{Address: addr, Token: "x", Logger: testLogger(t)})
	if err == nil {
		r.Stop()
		t.Fatalf("Start joining %s where nothing listens: got nil error", addr)
	}
	if el := time.Since(start); el > 8*time.Second {
		t.Errorf("Start took %v, want a failure within about 5s", el)
	}
	if want := "no goray head answers at " + addr; !strings.Contains(err.Error(), want) {
		t.Errorf("Start: got %q, want it to contain %q", err, want)
	}
}

func TestObjectPullAcrossNodes(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 1})
	node := startNode(t, head, map[string]float64{"CPU": 1})
	src, dst := nodeClient(t, head), nodeClient(t, node)

	job := ids.JobIDFromUint32(7)
	id := ids.NewTaskID(job).ObjectID(1)
	data := make([]byte, 5<<20+12345) // several chunks and a partial one
	rand.Read(data)
	if err := store.Write(head.StoreDir(), id, data); err != nil {
		t.Fatal(err)
	}
	if _, err := src.SealObject(callCtx(t), &pb.SealObjectRequest{ObjectId: id[:], Size: uint64(len(data)), JobId: job[:]}); err != nil {
		t.Fatalf("SealObject: %v", err)
	}
	loc := &pb.ObjectLocation{NodeId: head.nodeID[:], RayletAddress: head.Address(), Size: uint64(len(data))}

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	locs := make(chan *pb.ObjectLocation, 4)
	for range 4 { // concurrent pulls of one object
		wg.Go(func() {
			resp, err := dst.PullObject(callCtx(t), &pb.PullObjectRequest{ObjectId: id[:], Location: loc, JobId: job[:]})
			errc <- err
			locs <- resp.GetLocal()
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("PullObject: %v", err)
		}
	}
	local := <-locs
	if !local.GetInArena() || local.GetSize() != uint64(len(data)) {
		t.Fatalf("pulled object at %v, want %d bytes in the node's arena", local, len(data))
	}
	m, err := store.OpenArena(node.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.View(local.GetArenaOffset(), local.GetSize())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("pulled object: got %d bytes, want the %d bytes sealed on the head (contents differ)", len(got), len(data))
	}

	t.Run("arena to arena", func(t *testing.T) {
		id := ids.NewTaskID(job).ObjectID(3)
		data := make([]byte, 9<<20+77)
		rand.Read(data)
		a, err := src.AllocateObject(callCtx(t), &pb.AllocateObjectRequest{ObjectId: id[:], Size: uint64(len(data)), JobId: job[:]})
		if err != nil || !a.GetOk() {
			t.Fatalf("AllocateObject: %v, %v", a, err)
		}
		hm, err := store.OpenArena(head.StoreDir())
		if err != nil {
			t.Fatal(err)
		}
		w, err := hm.Region(a.GetOffset(), uint64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		copy(w, data)
		if _, err := src.SealObject(callCtx(t), &pb.SealObjectRequest{ObjectId: id[:], Size: uint64(len(data)), JobId: job[:]}); err != nil {
			t.Fatalf("SealObject: %v", err)
		}
		loc := &pb.ObjectLocation{NodeId: head.nodeID[:], RayletAddress: head.Address(), Size: uint64(len(data)), InArena: true, ArenaOffset: a.GetOffset()}
		resp, err := dst.PullObject(callCtx(t), &pb.PullObjectRequest{ObjectId: id[:], Location: loc, JobId: job[:]})
		if err != nil {
			t.Fatalf("PullObject: %v", err)
		}
		got, err := m.View(resp.GetLocal().GetArenaOffset(), resp.GetLocal().GetSize())
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("pulled object differs (%v)", err)
		}
		if _, err := dst.FreeObjects(callCtx(t), &pb.FreeObjectsRequest{ObjectIds: [][]byte{id[:]}}); err != nil {
			t.Fatalf("FreeObjects: %v", err)
		}
	})

	t.Run("unknown object is lost", func(t *testing.T) {
		missing := ids.NewTaskID(job).ObjectID(2)
		_, err := dst.PullObject(callCtx(t), &pb.PullObjectRequest{ObjectId: missing[:], Location: loc})
		if err := errs.FromStatus(err); !errors.Is(err, errs.ErrObjectLost) {
			t.Errorf("PullObject of an unknown object: got %v, want ErrObjectLost", err)
		}
	})

	t.Run("finish job frees its objects", func(t *testing.T) {
		if _, err := dst.StopJob(callCtx(t), &pb.StopJobRequest{JobId: job[:]}); err != nil {
			t.Fatalf("FinishJob: %v", err)
		}
		if used := node.arena.Used(); used != 0 {
			t.Errorf("%d bytes of the arena still in use after the job finished", used)
		}
	})
}

func TestLeaseSpillbackAndInfeasible(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 1})
	node := startNode(t, head, map[string]float64{"CPU": 1, "gpu": 2})
	client := nodeClient(t, head)
	job := ids.JobIDFromUint32(1)

	resp, err := client.RequestWorkerLease(callCtx(t), &pb.RequestWorkerLeaseRequest{
		JobId: job[:], Resources: &pb.Resources{Amounts: map[string]float64{"gpu": 1}},
	})
	if err != nil {
		t.Fatalf("RequestWorkerLease(gpu): %v", err)
	}
	if resp.GetSpillbackAddress() != node.Address() || !bytes.Equal(resp.GetSpillbackNodeId(), node.nodeID[:]) {
		t.Errorf("RequestWorkerLease(gpu): got spillback %q %x, want %q %s", resp.GetSpillbackAddress(), resp.GetSpillbackNodeId(), node.Address(), node.NodeID())
	}

	for _, tc := range []struct {
		name     string
		res      map[string]float64
		noSpill  bool
		resource string
	}{
		{"unknown resource", map[string]float64{"tpu": 1}, false, "tpu"},
		{"too much of a known one", map[string]float64{"gpu": 3}, false, "gpu"},
		{"no spillback twice", map[string]float64{"gpu": 1}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Without fail_fast an infeasible request waits (see
			// TestInfeasibleLeaseWaitsUntilANodeJoins); a spilled-back one that
			// cannot run here fails at once either way.
			_, err := client.RequestWorkerLease(callCtx(t), &pb.RequestWorkerLeaseRequest{
				JobId: job[:], Resources: &pb.Resources{Amounts: tc.res}, NoSpillback: tc.noSpill, FailFast: !tc.noSpill,
			})
			err = errs.FromStatus(err)
			if !errors.Is(err, errs.ErrInfeasible) {
				t.Fatalf("RequestWorkerLease(%v): got %v, want ErrInfeasible", tc.res, err)
			}
			if !strings.Contains(err.Error(), tc.resource) {
				t.Errorf("RequestWorkerLease(%v): got %q, want it to name %q", tc.res, err, tc.resource)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 1})
	client := nodeClient(t, head)
	ctx := callCtx(t)
	short := []byte{1, 2, 3}
	calls := map[string]func() error{
		"RequestWorkerLease job": func() error {
			_, err := client.RequestWorkerLease(ctx, &pb.RequestWorkerLeaseRequest{JobId: short})
			return err
		},
		"RequestWorkerLease resources": func() error {
			j := ids.JobIDFromUint32(1)
			_, err := client.RequestWorkerLease(ctx, &pb.RequestWorkerLeaseRequest{JobId: j[:], Resources: &pb.Resources{Amounts: map[string]float64{"CPU": -1}}})
			return err
		},
		"ReturnWorkerLease": func() error {
			_, err := client.ReturnWorkerLease(ctx, &pb.ReturnWorkerLeaseRequest{LeaseId: short})
			return err
		},
		"CreateActor no spec": func() error {
			_, err := client.StartActor(ctx, &pb.StartActorRequest{})
			return err
		},
		"CreateActor actor id": func() error {
			_, err := client.StartActor(ctx, &pb.StartActorRequest{Spec: &pb.ActorSpec{ActorId: short, TypeName: "x"}})
			return err
		},
		"KillActor": func() error {
			_, err := client.StopActor(ctx, &pb.StopActorRequest{ActorId: short})
			return err
		},
		"FinishJob": func() error {
			_, err := client.StopJob(ctx, &pb.StopJobRequest{JobId: short})
			return err
		},
		"SealObject": func() error {
			_, err := client.SealObject(ctx, &pb.SealObjectRequest{ObjectId: short})
			return err
		},
		"PullObject": func() error {
			_, err := client.PullObject(ctx, &pb.PullObjectRequest{ObjectId: short})
			return err
		},
		"RegisterWorker": func() error {
			st, err := client.RegisterWorker(ctx, &pb.RegisterWorkerRequest{WorkerId: short, Address: "127.0.0.1:1"})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
		"Pull": func() error {
			st, err := pb.NewObjectTransferServiceClient(dial(t, head.Address(), head.Token())).Pull(ctx, &pb.PullRequest{ObjectId: short})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Errorf("got %v (%v), want InvalidArgument", got, err)
			}
		})
	}
	t.Run("RegisterWorker unknown worker", func(t *testing.T) {
		w := ids.NewWorkerID()
		st, err := client.RegisterWorker(ctx, &pb.RegisterWorkerRequest{WorkerId: w[:], Address: "127.0.0.1:1"})
		if err == nil {
			_, err = st.Recv()
		}
		if got := status.Code(err); got != codes.NotFound {
			t.Errorf("got %v (%v), want NotFound", got, err)
		}
	})
	// The raylet still serves after all of that.
	if _, err := client.GetNodeInfo(ctx, &pb.GetNodeInfoRequest{}); err != nil {
		t.Fatalf("GetNodeInfo after bad input: %v", err)
	}
}

func TestStopIsIdempotentAndCleansUp(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 1})
	data, st, tok := head.dataDir, head.StoreDir(), head.TokenFile()
	head.Stop()
	head.Stop()
	for _, p := range []string{data, st} {
		if _, err := filepath.Glob(p); err != nil {
			t.Fatal(err)
		}
		if exists(p) {
			t.Errorf("%s still exists after Stop", p)
		}
	}
	if !exists(tok) {
		t.Errorf("explicit token file %s was removed by Stop; want it kept", tok)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = valid
	}{
		{"join", Config{Address: "127.0.0.1:6379"}, ""},
		{"no address (a head's node learns it)", Config{}, ""},
		{"bad address", Config{Address: "nohost"}, "HOST:PORT"},
		{"bad listen", Config{Listen: "x"}, "HOST:PORT"},
		{"public without auth", Config{NoAuth: true, Listen: "0.0.0.0:0"}, "non-loopback"},
		{"public with auth", Config{Listen: "0.0.0.0:0"}, ""},
		{"negative resource", Config{Resources: map[string]float64{"CPU": -1}}, "CPU"},
		{"empty resource name", Config{Resources: map[string]float64{"": 1}}, "empty name"},
		{"negative workers", Config{MaxWorkersPerJob: -1}, "MaxWorkersPerJob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: got %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// An object larger than the node's store can ever hold fails with
// ErrObjectStoreFull naming its size and the capacity — put or pull — and
// the raylet keeps serving; the arena file goes when the raylet stops.
func TestObjectArenaFull(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 1})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	node, err := Start(ctx, Config{Address: head.Address(), Resources: map[string]float64{"CPU": 1},
		TokenFile: head.TokenFile(), Logger: testLogger(t), Stderr: t.Output(), ObjectStoreMemory: 1 << 20})
	if err != nil {
		t.Fatalf("Start node: %v", err)
	}
	arena := store.ArenaPath(node.StoreDir())
	t.Cleanup(func() {
		node.Stop()
		if _, err := os.Stat(arena); !os.IsNotExist(err) {
			t.Errorf("arena file after Stop: %v", err)
		}
	})
	if _, err := os.Stat(arena); err != nil {
		t.Fatalf("no arena file: %v", err)
	}
	src, dst := nodeClient(t, head), nodeClient(t, node)
	job := ids.JobIDFromUint32(9)
	id := ids.NewTaskID(job).ObjectID(1)
	data := make([]byte, 3<<20)
	rand.Read(data)
	checkFull := func(what string, err error) {
		t.Helper()
		if !errors.Is(errs.FromStatus(err), errs.ErrObjectStoreFull) {
			t.Fatalf("%s: got %v, want ErrObjectStoreFull", what, err)
		}
		for _, want := range []string{"3145728 bytes", "capacity is 1048576 bytes", "--object-store-memory"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: got %q, want it to say %q", what, err, want)
			}
		}
	}
	_, err = dst.AllocateObject(callCtx(t), &pb.AllocateObjectRequest{ObjectId: id[:], Size: uint64(len(data)), JobId: job[:]})
	checkFull("AllocateObject of 3 MiB in a 1 MiB arena", err)
	if err := store.Write(head.StoreDir(), id, data); err != nil {
		t.Fatal(err)
	}
	if _, err := src.SealObject(callCtx(t), &pb.SealObjectRequest{ObjectId: id[:], Size: uint64(len(data)), JobId: job[:]}); err != nil {
		t.Fatalf("SealObject: %v", err)
	}
	loc := &pb.ObjectLocation{NodeId: head.nodeID[:], RayletAddress: head.Address(), Size: uint64(len(data))}
	_, err = dst.PullObject(callCtx(t), &pb.PullObjectRequest{ObjectId: id[:], Location: loc, JobId: job[:]})
	checkFull("PullObject of 3 MiB into a 1 MiB arena", err)
	if exists(store.Path(node.StoreDir(), id)) {
		t.Error("the failed pull left a file in the store directory")
	}
	// Sizes at the top of uint64 must not wrap to a small region.
	for _, size := range []uint64{math.MaxUint64, math.MaxUint64 - 4095, 1 << 63} {
		huge := ids.NewTaskID(job).ObjectID(3)
		a, err := dst.AllocateObject(callCtx(t), &pb.AllocateObjectRequest{ObjectId: huge[:], Size: size, JobId: job[:]})
		if a.GetOk() || !errors.Is(errs.FromStatus(err), errs.ErrObjectStoreFull) || !strings.Contains(err.Error(), fmt.Sprint(size)) {
			t.Errorf("AllocateObject of %d bytes: got %v, %v; want ErrObjectStoreFull naming the size", size, a, err)
		}
	}
	// The raylet keeps serving: an object that fits goes into the arena.
	small := ids.NewTaskID(job).ObjectID(2)
	a, err := dst.AllocateObject(callCtx(t), &pb.AllocateObjectRequest{ObjectId: small[:], Size: 4096, JobId: job[:]})
	if err != nil || !a.GetOk() {
		t.Fatalf("AllocateObject of 4 KiB after the failures: got %v, %v; want a region", a, err)
	}
	info, err := dst.GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{})
	if err != nil {
		t.Fatalf("GetNodeInfo: %v", err)
	}
	if st := info.GetObjectStore(); st.GetCapacityBytes() != 1<<20 || st.GetUsedBytes() != 4096 || st.GetSpillDir() != node.SpillDir() {
		t.Errorf("GetNodeInfo object store: got %v, want capacity 1 MiB, 4096 used, spill dir %s", st, node.SpillDir())
	}
}
