package raylet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"

	"github.com/goray/goray/internal/testwait"
)

// fakeView is a cluster view with a fixed node table and SPREAD loads.
type fakeView struct {
	nodes   []*pb.NodeInfo
	changed chan struct{}
	loads   map[ids.NodeID]int
}

func newFakeView(nodes ...*pb.NodeInfo) *fakeView {
	return &fakeView{nodes: nodes, changed: make(chan struct{}), loads: map[ids.NodeID]int{}}
}

func (f *fakeView) snapshot() ([]*pb.NodeInfo, <-chan struct{}) { return f.nodes, f.changed }
func (f *fakeView) load(id ids.NodeID, _ time.Time) int         { return f.loads[id] }

// viewNodeInfo is an alive node of a fake view with total = available = res.
func viewNodeInfo(id ids.NodeID, addr string, res map[string]float64) *pb.NodeInfo {
	return &pb.NodeInfo{NodeId: id[:], Address: addr, Alive: true,
		Total: &pb.Resources{Amounts: res}, Available: &pb.Resources{Amounts: res}}
}

func newTestLeases(t *testing.T, total sched.Resources, view nodeView) *leaseManager {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return newLeaseManager(ids.NewNodeID(), total, view, done)
}

func (m *leaseManager) queued() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiters)
}

// acquireAsync runs acquire in a goroutine; its result arrives on the
// channel.
func acquireAsync(ctx context.Context, m *leaseManager, need sched.Resources) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- m.acquire(ctx, need) }()
	return ch
}

func TestLeaseManagerGrantsInArrivalOrder(t *testing.T) {
	m := newTestLeases(t, sched.Resources{"CPU": 2}, newFakeView())
	ctx := context.Background()
	if err := m.acquire(ctx, sched.Resources{"CPU": 2}); err != nil {
		t.Fatalf("acquire all: %v", err)
	}
	// First a request for both CPUs, then two for one each.
	big := acquireAsync(ctx, m, sched.Resources{"CPU": 2})
	testwait.Eventually(t, 10*time.Second, "the big request queued", func() bool { return m.queued() == 1 })
	first := acquireAsync(ctx, m, sched.Resources{"CPU": 1})
	testwait.Eventually(t, 10*time.Second, "the first small request queued", func() bool { return m.queued() == 2 })
	second := acquireAsync(ctx, m, sched.Resources{"CPU": 1})
	testwait.Eventually(t, 10*time.Second, "the second small request queued", func() bool { return m.queued() == 3 })

	// One CPU frees: the first small request gets it (the big one, which
	// does not fit yet, does not hold it back); the second still waits.
	m.release(sched.Resources{"CPU": 1})
	if err := <-first; err != nil {
		t.Fatalf("first small request: got %v, want granted", err)
	}
	if got := m.queued(); got != 2 {
		t.Fatalf("waiting after one CPU freed: got %d, want 2 (big and second)", got)
	}
	m.release(sched.Resources{"CPU": 1})
	if err := <-second; err != nil {
		t.Fatalf("second small request: got %v, want granted", err)
	}
	// Both small ones give back: the big one fits now.
	m.release(sched.Resources{"CPU": 2})
	if err := <-big; err != nil {
		t.Fatalf("big request: got %v, want granted", err)
	}
	if _, avail := m.resources(); avail["CPU"] != 0 {
		t.Errorf("available CPU with the big request granted: got %v, want 0", avail["CPU"])
	}
}

func TestLeaseManagerQueueUntilFreeAndTimeout(t *testing.T) {
	m := newTestLeases(t, sched.Resources{"CPU": 1}, newFakeView())
	if err := m.acquire(context.Background(), sched.Resources{"CPU": 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := m.acquire(ctx, sched.Resources{"CPU": 1})
	if !errors.Is(err, errs.ErrTimeout) {
		t.Fatalf("acquire while busy with a deadline: got %v, want ErrTimeout", err)
	}
	if got := m.queued(); got != 0 {
		t.Errorf("waiters after the timeout: got %d, want 0", got)
	}
	// A lease holds what was acquired; dropping it frees it for the next.
	l := m.newLease(&worker{id: ids.NewWorkerID()}, sched.Resources{"CPU": 1})
	next := acquireAsync(context.Background(), m, sched.Resources{"CPU": 1})
	testwait.Eventually(t, 10*time.Second, "the next request queued", func() bool { return m.queued() == 1 })
	if !m.dropLease(l) {
		t.Fatal("dropLease of a held lease: got false, want true")
	}
	if err := <-next; err != nil {
		t.Fatalf("request after the lease was dropped: got %v, want granted", err)
	}
	if m.dropLease(l) {
		t.Error("dropLease twice: got true, want false")
	}
	if err := m.acquire(context.Background(), sched.Resources{"GPU": 1}); !errors.Is(err, errs.ErrInfeasible) {
		t.Errorf("acquire of a resource the node lacks: got %v, want ErrInfeasible", err)
	}
}

func TestLeaseManagerDecide(t *testing.T) {
	gpuNode, cpuNode := ids.NewNodeID(), ids.NewNodeID()
	view := newFakeView(
		viewNodeInfo(gpuNode, "10.0.0.2:1", map[string]float64{"CPU": 4, "GPU": 1}),
		viewNodeInfo(cpuNode, "10.0.0.3:1", map[string]float64{"CPU": 8}),
	)
	dead := viewNodeInfo(ids.NewNodeID(), "10.0.0.4:1", map[string]float64{"CPU": 8, "TPU": 1})
	dead.Alive = false
	view.nodes = append(view.nodes, dead)
	m := newTestLeases(t, sched.Resources{"CPU": 4}, view)
	affinity := func(id ids.NodeID, soft bool) *pb.SchedulingStrategy {
		return &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_NODE_AFFINITY, NodeId: id[:], Soft: soft}
	}

	tests := []struct {
		name     string
		need     sched.Resources
		strategy *pb.SchedulingStrategy
		refresh  bool
		where    placement
		node     ids.NodeID // placeSpill
		reason   string     // placeInfeasible: in the reason
	}{
		{name: "fits here under the threshold", need: sched.Resources{"CPU": 1}, where: placeHere},
		{name: "spills to the node with the resource", need: sched.Resources{"GPU": 1}, where: placeSpill, node: gpuNode},
		{name: "infeasible on every alive node", need: sched.Resources{"TPU": 1}, where: placeInfeasible, reason: "TPU"},
		{name: "hard affinity to another node spills there", need: sched.Resources{"CPU": 1}, strategy: affinity(cpuNode, false), where: placeSpill, node: cpuNode},
		{name: "affinity to an unknown node refreshes first", need: sched.Resources{"CPU": 1}, strategy: affinity(ids.NewNodeID(), false), where: placeRefresh},
		{name: "hard affinity to an unknown node fails", need: sched.Resources{"CPU": 1}, strategy: affinity(ids.NewNodeID(), false), refresh: true, where: placeFail},
		{name: "soft affinity to a dead node falls back", need: sched.Resources{"CPU": 1}, strategy: affinity(ids.NodeID(dead.GetNodeId()), true), refresh: true, where: placeHere},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &pb.RequestWorkerLeaseRequest{FunctionName: "f", SchedulingStrategy: tc.strategy}
			var aff ids.NodeID
			if tc.strategy.GetKind() == pb.SchedulingStrategy_KIND_NODE_AFFINITY {
				aff = ids.NodeID(tc.strategy.GetNodeId())
			}
			d := m.decide(req, tc.need, aff, tc.refresh)
			if d.where != tc.where {
				t.Fatalf("decision: got %v (err %v, reason %q), want %v", d.where, d.err, d.reason, tc.where)
			}
			switch tc.where {
			case placeSpill:
				if got := ids.NodeID(d.node.GetNodeId()); got != tc.node {
					t.Errorf("spilled to %s, want %s", got, tc.node)
				}
			case placeInfeasible:
				if !strings.Contains(d.reason, tc.reason) {
					t.Errorf("infeasible reason: got %q, want it to name %q", d.reason, tc.reason)
				}
			case placeFail:
				if !errors.Is(d.err, errs.ErrInfeasible) {
					t.Errorf("failure: got %v, want ErrInfeasible", d.err)
				}
			}
			if d.view == nil || d.total == nil {
				t.Error("decision carries no channels to wait for a change on")
			}
		})
	}
}

// TestLeaseManagerSpreadGoesRound: SPREAD counts its own decisions, so
// consecutive requests go round the nodes that fit whatever other work was
// placed before (the view's lease load, which the default strategy uses).
func TestLeaseManagerSpreadGoesRound(t *testing.T) {
	other := ids.NewNodeID()
	view := newFakeView(viewNodeInfo(other, "10.0.0.2:1", map[string]float64{"CPU": 4}))
	m := newTestLeases(t, sched.Resources{"CPU": 4}, view)
	spread := &pb.RequestWorkerLeaseRequest{SchedulingStrategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_SPREAD}}
	// Default-strategy work loaded this node lately: SPREAD does not care.
	view.loads[m.self] = 3
	count := map[placement]int{}
	var last placement
	for i := range 4 {
		d := m.decide(spread, sched.Resources{"CPU": 1}, ids.NodeID{}, false)
		if d.where == placeSpill && ids.NodeID(d.node.GetNodeId()) != other {
			t.Fatalf("SPREAD decision %d: spilled to %x, want %s", i, d.node.GetNodeId(), other)
		}
		if i > 0 && d.where == last {
			t.Fatalf("SPREAD decision %d: %v again, want it to alternate between the two nodes", i, d.where)
		}
		last = d.where
		count[d.where]++
	}
	if count[placeHere] != 2 || count[placeSpill] != 2 {
		t.Fatalf("4 SPREAD decisions over 2 nodes: got %v, want 2 here and 2 spilled", count)
	}
}

func TestLeaseManagerInfeasibleInHeartbeat(t *testing.T) {
	m := newTestLeases(t, sched.Resources{"CPU": 1}, newFakeView())
	q := &infeasibleReq{job: ids.JobIDFromUint32(7), name: "f", need: sched.Resources{"TPU": 1}}
	if !m.waitInfeasible(q, "no node has TPU") {
		t.Fatal("first waitInfeasible: got false, want true (new)")
	}
	if m.waitInfeasible(q, "still no TPU") {
		t.Fatal("second waitInfeasible: got true, want false (known)")
	}
	var hb pb.HeartbeatRequest
	m.heartbeat(&hb)
	if len(hb.Infeasible) != 1 || hb.Infeasible[0].GetReason() != "still no TPU" || hb.Infeasible[0].GetName() != "f" {
		t.Fatalf("heartbeat infeasible: got %v, want one request f with the latest reason", hb.Infeasible)
	}
	if hb.GetTotal().GetAmounts()["CPU"] != 1 || hb.GetAvailable().GetAmounts()["CPU"] != 1 {
		t.Errorf("heartbeat resources: got total %v available %v, want CPU 1 and 1", hb.GetTotal(), hb.GetAvailable())
	}
	m.doneInfeasible(q)
	hb = pb.HeartbeatRequest{}
	m.heartbeat(&hb)
	if len(hb.Infeasible) != 0 {
		t.Errorf("heartbeat after the request ended: got %v, want none infeasible", hb.Infeasible)
	}
}
