package core

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// reported is one report an actor submitter made.
type reported struct {
	node []byte
	addr string
	done chan struct{} // closed by the test: the report returns
}

// newReportingActorSubmitter is newTestActorSubmitter over pusher, whose
// reports of unreachable workers go to the returned channel (unbuffered: a
// report waits until the test closes its done).
func newReportingActorSubmitter(t *testing.T, pusher taskPusher) (*actorSubmitter, *actorRoute, fakeLocator, chan reported) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	locator, reports := make(fakeLocator, 8), make(chan reported)
	s := newActorSubmitter(actorSubmitterConfig{ctx: ctx, wg: &wg, pusher: pusher, locator: locator,
		report: func(ctx context.Context, node []byte, addr string) bool {
			q := reported{node, addr, make(chan struct{})}
			select {
			case reports <- q:
			case <-ctx.Done():
				return false
			}
			select {
			case <-q.done:
			case <-ctx.Done():
			}
			return true
		}})
	info := actorInfo(ids.NewActorID(ids.JobIDFromUint32(1)), "w1", 0, 0)
	info.NodeId = []byte("node-1")
	r, err := s.route(info)
	if err != nil {
		t.Fatal(err)
	}
	return s, r, locator, reports
}

// refusingPusher cannot reach any worker at addr "w1" (as execPool when
// the connection is refused) and hands other pushes to the test.
type refusingPusher struct{ fakePusher }

func (p refusingPusher) push(addr string, spec *pb.TaskSpec, cb callback) (sentCall, error) {
	if addr == "w1" {
		return nil, errs.New(errs.KindWorkerCrashed, "", "cannot reach the worker at %s: connection refused", addr)
	}
	return p.fakePusher.push(addr, spec, cb)
}

func nextReport(t *testing.T, reports chan reported) reported {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the submitter never reported the unreachable worker's node")
		return reported{}
	}
}

// A call that cannot reach the actor's worker has the head check the
// worker's node before the submitter waits for the head's answer.
func TestActorLookupReportsTheUnreachableWorkersNodeFirst(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refuse  bool // the call cannot be sent at all; else it is lost in flight
		wantErr error
	}{
		{"lost in flight", false, errs.ErrWorkerCrashed},
		{"never sent", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := make(fakePusher, 64)
			var pusher taskPusher = fp
			if tc.refuse {
				pusher = refusingPusher{fp}
			}
			s, r, locator, reports := newReportingActorSubmitter(t, pusher)
			e := callTest(s, r, "add")
			if !tc.refuse {
				fp.next(t).cb(nil, errWorkerGone)
			}
			got := nextReport(t, reports)
			if !bytes.Equal(got.node, []byte("node-1")) || got.addr != "w1" {
				t.Fatalf("report: got node %q at %s, want node-1 at w1", got.node, got.addr)
			}
			if len(locator) != 0 {
				t.Fatal("the submitter asked where the actor went before its report of the node was answered")
			}
			close(got.done)
			locator.next(t).answer <- actorInfo(r.id, "w2", 1, 0)
			if tc.refuse {
				// Never delivered: sent to the next incarnation.
				p := fp.next(t)
				if p.addr != "w2" {
					t.Fatalf("the call that was never sent: got it sent to %s, want w2", p.addr)
				}
				p.cb(valueReply("ok"), nil)
			}
			waitEntry(t, e)
			if !errors.Is(e.err, tc.wantErr) || (tc.wantErr == nil && e.err != nil) {
				t.Fatalf("call: got %v, want %v", e.err, tc.wantErr)
			}
		})
	}
}

// A call refused by another incarnation reached a live worker: nothing to
// report.
func TestActorLookupAfterAStaleIncarnationReportsNothing(t *testing.T) {
	pusher := make(fakePusher, 64)
	s, r, locator, reports := newReportingActorSubmitter(t, pusher)
	e := callTest(s, r, "add")
	stale := errs.New(errs.KindActorDied, "counter", "a call for incarnation 0 reached incarnation 1")
	stale.Cause = causeStaleIncarnation
	pusher.next(t).cb(errorReply(0, stale), nil)
	locator.next(t).answer <- actorInfo(r.id, "w2", 1, 0)
	p := pusher.next(t)
	p.cb(valueReply("ok"), nil)
	waitEntry(t, e)
	select {
	case got := <-reports:
		t.Fatalf("got a report of node %q after a stale-incarnation refusal, want none", got.node)
	default:
	}
}

func TestLeaseRetriable(t *testing.T) {
	ownGone := errs.New(errs.KindNodeDied, "f", "this process's node is gone")
	ownGone.NodeID = []byte("node-1")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"transport unavailable", errs.FromStatus(status.Error(codes.Unavailable, "connection refused")), true},
		{"raylet stopping", errs.New(errs.KindNodeDied, "", "the raylet is shutting down"), true},
		{"own node gone, no other", ownGone, false},
		{"infeasible", errs.New(errs.KindInfeasible, "f", "no node has GPU"), false},
		{"job finished", errs.New(errs.KindJobFinished, "", "finished"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := leaseRetriable(tc.err); got != tc.want {
				t.Fatalf("leaseRetriable(%v): got %t, want %t", tc.err, got, tc.want)
			}
		})
	}
}

// fakeRegistry is the head's node table as a driver's core asks it: it
// lists nodes and answers reports from a set of dead nodes.
type fakeRegistry struct {
	pb.NodeRegistryServiceClient // unused methods panic

	mu      sync.Mutex
	nodes   []*pb.NodeInfo
	dead    map[string]bool
	reports []string // node IDs reported, hex
}

func (f *fakeRegistry) ListNodes(context.Context, *pb.ListNodesRequest, ...grpc.CallOption) (*pb.ListNodesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pb.NodeInfo
	for _, n := range f.nodes {
		c := proto.Clone(n).(*pb.NodeInfo)
		c.Alive = !f.dead[string(n.GetNodeId())]
		out = append(out, c)
	}
	return &pb.ListNodesResponse{Nodes: out}, nil
}

func (f *fakeRegistry) ReportUnreachable(_ context.Context, req *pb.ReportUnreachableRequest, _ ...grpc.CallOption) (*pb.ReportUnreachableResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, string(req.GetNodeId()))
	return &pb.ReportUnreachableResponse{Dead: f.dead[string(req.GetNodeId())]}, nil
}

func (f *fakeRegistry) kill(id ids.NodeID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dead[string(id[:])] = true
}

// newDriverCore is a driver's core on node "own" (raylet at 127.0.0.1:1,
// never dialled) whose head is reg.
func newDriverCore(t *testing.T, reg *fakeRegistry) *Core {
	t.Helper()
	c := newCore(slog.New(slog.DiscardHandler), "")
	t.Cleanup(func() { c.cancel(); c.conns.closeAll() })
	c.nodeID, c.raylet = ids.NewNodeID(), "127.0.0.1:1"
	c.head = &rpc.HeadClient{NodeRegistryServiceClient: reg}
	cc, err := c.conns.get(c.raylet)
	if err != nil {
		t.Fatal(err)
	}
	c.node = rpc.NewNodeClient(cc)
	reg.nodes = append(reg.nodes, &pb.NodeInfo{NodeId: c.nodeID[:], Address: c.raylet, Total: &pb.Resources{Amounts: map[string]float64{"CPU": 2}}})
	return c
}

func nodeInfo(id ids.NodeID, addr string, total map[string]float64) *pb.NodeInfo {
	return &pb.NodeInfo{NodeId: id[:], Address: addr, Total: &pb.Resources{Amounts: total}}
}

// Once the head holds this process's node dead, leases go to another alive
// node whose resources fit, then to the next when that one dies too, and
// with none left fail with a final ErrNodeDied.
func TestLeasesMoveToASubstituteOnceTheLocalNodeIsGone(t *testing.T) {
	reg := &fakeRegistry{dead: map[string]bool{}}
	c := newDriverCore(t, reg)
	small, big, other := ids.NewNodeID(), ids.NewNodeID(), ids.NewNodeID()
	reg.nodes = append(reg.nodes,
		nodeInfo(small, "127.0.0.1:2", map[string]float64{"CPU": 1}),
		nodeInfo(big, "127.0.0.1:3", map[string]float64{"CPU": 8}),
		nodeInfo(other, "127.0.0.1:4", map[string]float64{"CPU": 8}))
	req := &pb.RequestWorkerLeaseRequest{Resources: &pb.Resources{Amounts: map[string]float64{"CPU": 4}}, FunctionName: "f"}
	ctx := t.Context()

	if _, node, _, err := c.leaseRaylet(ctx, req); err != nil || !bytes.Equal(node, c.nodeID[:]) {
		t.Fatalf("lease raylet while the local node lives: got node %x (%v), want the local one", node, err)
	}
	// The local raylet refuses; the head has not declared the node dead.
	if c.leaseTargetDown(ctx, c.nodeID[:], c.raylet) || c.local.gone.Load() {
		t.Fatal("a local raylet the head holds alive was given up")
	}
	reg.kill(c.nodeID)
	if !c.leaseTargetDown(ctx, c.nodeID[:], c.raylet) || !c.local.gone.Load() {
		t.Fatal("a local raylet the head holds dead was not given up")
	}
	_, node, addr, err := c.leaseRaylet(ctx, req)
	if err != nil || !bytes.Equal(node, big[:]) || addr != "127.0.0.1:3" {
		t.Fatalf("substitute: got node %x at %s (%v), want the first alive node that fits, %s at 127.0.0.1:3", node, addr, err, big)
	}
	// A spillback target that is gone changes nothing here.
	if c.leaseTargetDown(ctx, small[:], "127.0.0.1:2") {
		t.Fatal("an unreachable spillback target (alive at the head) restarted the request")
	}
	reg.kill(big)
	if !c.leaseTargetDown(ctx, big[:], "127.0.0.1:3") {
		t.Fatal("a substitute the head holds dead was kept")
	}
	if _, node, _, err := c.leaseRaylet(ctx, req); err != nil || !bytes.Equal(node, other[:]) {
		t.Fatalf("next substitute: got node %x (%v), want %s", node, err, other)
	}
	reg.kill(other)
	reg.kill(small)
	c.leaseTargetDown(ctx, other[:], "127.0.0.1:4")
	_, _, _, err = c.leaseRaylet(ctx, req)
	var ge *errs.Error
	if !errors.Is(err, errs.ErrNodeDied) || !errors.As(err, &ge) || !bytes.Equal(ge.NodeID, c.nodeID[:]) || ge.Name != "f" || leaseRetriable(err) {
		t.Fatalf("with no node alive: got %v, want a final ErrNodeDied for f naming this process's node", err)
	}
}

// A large put or a stored get that fails because this process's node is
// gone says so; other failures, and failures while the node lives, pass
// through.
func TestLocalNodeGoneErrors(t *testing.T) {
	reg := &fakeRegistry{dead: map[string]bool{}}
	c := newDriverCore(t, reg)
	ctx := t.Context()
	down := errs.FromStatus(status.Error(codes.Unavailable, "connection refused"))
	missing := &fs.PathError{Op: "open", Path: "/dev/shm/x", Err: fs.ErrNotExist}
	full := errs.New(errs.KindObjectStoreFull, "", "full")

	if c.localNodeGone(ctx, down) || c.localNodeGone(ctx, missing) {
		t.Fatal("the local node counted gone while the head holds it alive")
	}
	reg.kill(c.nodeID)
	if c.localNodeGone(ctx, full) {
		t.Fatal("a full store asked the head about the local node")
	}
	reg.mu.Lock()
	asked := len(reg.reports)
	reg.mu.Unlock()
	if asked != 2 {
		t.Fatalf("reports to the head: got %d, want 2 (one per unreachable-looking failure)", asked)
	}
	if !c.localNodeGone(ctx, missing) {
		t.Fatal("a missing store directory on a node the head holds dead: not gone")
	}
	if !c.localNodeGone(ctx, full) {
		t.Fatal("once gone, the local node stays gone")
	}
	err := c.errLocalNodeGone("put a 1048576-byte value", missing)
	if !errors.Is(err, errs.ErrNodeDied) || !strings.Contains(err.Error(), "this process's node "+c.nodeID.String()+" is gone") {
		t.Fatalf("got %v, want ErrNodeDied naming this process's node", err)
	}
}

// fakeHolder serves ObjectTransferService.Pull with the chunks it is given.
type fakeHolder struct {
	pb.UnimplementedObjectTransferServiceServer
	chunks []*pb.PullResponse
}

func (h *fakeHolder) Pull(_ *pb.PullRequest, stream pb.ObjectTransferService_PullServer) error {
	for _, c := range h.chunks {
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}

// serveHolder serves h on loopback until the test ends and returns its
// address.
func serveHolder(t *testing.T, h *fakeHolder) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(rpc.ServerOptions("")...)
	pb.RegisterObjectTransferServiceServer(srv, h)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	t.Cleanup(func() { srv.Stop(); wg.Wait() })
	return lis.Addr().String()
}

// A process whose node is gone reads stored objects from their holder into
// memory, and checks what the holder sends against the location.
func TestPullWithoutNode(t *testing.T) {
	chunk := func(total, off uint64, data string) *pb.PullResponse {
		return &pb.PullResponse{TotalSize: total, Offset: off, Data: []byte(data)}
	}
	holderNode := ids.NewNodeID()
	for _, tc := range []struct {
		name     string
		chunks   []*pb.PullResponse
		size     uint64
		want     string
		wantLost string // when it fails: what ErrObjectLost says
	}{
		{"whole", []*pb.PullResponse{chunk(6, 0, "abc"), chunk(6, 3, "def")}, 6, "abcdef", ""},
		{"other size there", []*pb.PullResponse{chunk(7, 0, "abc")}, 6, "", "7 bytes there"},
		{"gap", []*pb.PullResponse{chunk(6, 0, "abc"), chunk(6, 4, "ef")}, 6, "", "offset 4, want 3"},
		{"too much", []*pb.PullResponse{chunk(6, 0, "abcdefg")}, 6, "", "more than its 6 bytes"},
		{"short", []*pb.PullResponse{chunk(6, 0, "abc")}, 6, "", "got 3 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDriverCore(t, &fakeRegistry{dead: map[string]bool{}})
			addr := serveHolder(t, &fakeHolder{chunks: tc.chunks})
			loc := &pb.ObjectLocation{NodeId: holderNode[:], RayletAddress: addr, Size: tc.size, Encoding: pb.Encoding_ENCODING_RAW}
			p, err := c.pullWithoutNode(t.Context(), ids.NewTaskID(ids.JobIDFromUint32(1)).ObjectID(1), loc)
			if tc.wantLost == "" {
				if err != nil || string(p.GetData()) != tc.want || p.GetEncoding() != pb.Encoding_ENCODING_RAW {
					t.Fatalf("got %q (%v), want %q", p.GetData(), err, tc.want)
				}
				return
			}
			if !errors.Is(err, errs.ErrObjectLost) || !strings.Contains(err.Error(), tc.wantLost) {
				t.Fatalf("got %q, %v; want ErrObjectLost saying %q", p.GetData(), err, tc.wantLost)
			}
		})
	}
	t.Run("on this process's node", func(t *testing.T) {
		c := newDriverCore(t, &fakeRegistry{dead: map[string]bool{}})
		loc := &pb.ObjectLocation{NodeId: c.nodeID[:], RayletAddress: c.raylet, Size: 6}
		if _, err := c.pullWithoutNode(t.Context(), ids.NewTaskID(ids.JobIDFromUint32(1)).ObjectID(1), loc); !errors.Is(err, errs.ErrObjectLost) {
			t.Fatalf("got %v, want ErrObjectLost (lost with this process's node)", err)
		}
	})
	t.Run("holder gone", func(t *testing.T) {
		reg := &fakeRegistry{dead: map[string]bool{string(holderNode[:]): true}}
		c := newDriverCore(t, reg)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close() // nothing listens: refused
		loc := &pb.ObjectLocation{NodeId: holderNode[:], RayletAddress: addr, Size: 6}
		if _, err := c.pullWithoutNode(t.Context(), ids.NewTaskID(ids.JobIDFromUint32(1)).ObjectID(1), loc); !errors.Is(err, errs.ErrObjectLost) {
			t.Fatalf("got %v, want ErrObjectLost", err)
		}
		reg.mu.Lock()
		defer reg.mu.Unlock()
		if len(reg.reports) != 1 || reg.reports[0] != string(holderNode[:]) {
			t.Fatalf("reports: got %d (%x), want one of the holder's node", len(reg.reports), reg.reports)
		}
	})
}

// brokenStream is an Execute stream whose sends fail, as gRPC's do once
// the transport closed; beforeFail runs inside Send first.
type brokenStream struct {
	pb.WorkerService_ExecuteClient
	beforeFail func()
}

func (b brokenStream) Send(*pb.ExecuteRequest) error {
	if b.beforeFail != nil {
		b.beforeFail()
	}
	return io.EOF
}

// A call whose send fails never left this process: the caller is told so
// (and can send it elsewhere), and its callback never runs — unless the
// receive loop failed it first, which then is its one outcome.
func TestExecSendOnABrokenStream(t *testing.T) {
	t.Run("send fails first", func(t *testing.T) {
		s := &execStream{addr: "w1", stream: brokenStream{}, pending: map[uint64]callback{}}
		called := 0
		_, err := s.send(&pb.TaskSpec{}, func(*pb.ExecuteResponse, error) { called++ })
		if err == nil || called != 0 || len(s.pending) != 0 {
			t.Fatalf("got err %v, %d callbacks, %d pending; want an error, no callback, none pending", err, called, len(s.pending))
		}
	})
	t.Run("receive loop fails it first", func(t *testing.T) {
		s := &execStream{addr: "w1", pending: map[uint64]callback{}}
		s.stream = brokenStream{beforeFail: func() { s.fail(errWorkerGone) }}
		called := 0
		_, err := s.send(&pb.TaskSpec{}, func(_ *pb.ExecuteResponse, err error) {
			if !errors.Is(err, errs.ErrWorkerCrashed) {
				t.Errorf("callback: got %v, want ErrWorkerCrashed", err)
			}
			called++
		})
		if err != nil || called != 1 {
			t.Fatalf("got err %v and %d callbacks, want no error and exactly one callback", err, called)
		}
	})
}
