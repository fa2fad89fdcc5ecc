package scheduler

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

type nodeFixture struct {
	m *nodeManager

	mu      sync.Mutex
	dead    []ids.NodeID
	dropped []string
}

func newNodeFixture(t *testing.T) *nodeFixture {
	t.Helper()
	f := &nodeFixture{}
	f.m = newNodeManager(slog.New(slog.DiscardHandler), &syncStore{s: NewMemoryStore()}, newChangeFeed(), time.Second, 4*time.Second)
	f.m.onDead = func(id ids.NodeID, _, _ string) int {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.dead = append(f.dead, id)
		return 0
	}
	f.m.dropConn = func(addr string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.dropped = append(f.dropped, addr)
	}
	return f
}

func (f *nodeFixture) register(t *testing.T, addr string, cpu float64) ids.NodeID {
	t.Helper()
	id := ids.NewNodeID()
	if _, err := f.m.register(&pb.RegisterNodeRequest{NodeId: id[:], Address: addr, Total: &pb.Resources{Amounts: map[string]float64{"CPU": cpu}}}); err != nil {
		t.Fatalf("register %s: %v", addr, err)
	}
	return id
}

func TestNodeManagerLiveness(t *testing.T) {
	f := newNodeFixture(t)
	a := f.register(t, "a", 2)
	b := f.register(t, "b", 4)
	if got := len(f.m.aliveNodes()); got != 2 {
		t.Fatalf("got %d alive nodes, want 2", got)
	}
	// b heartbeats, a stays silent past the timeout.
	start := time.Now()
	if _, err := f.m.heartbeatNode(&pb.HeartbeatRequest{NodeId: b[:], Available: &pb.Resources{Amounts: map[string]float64{"CPU": 1}}}); err != nil {
		t.Fatal(err)
	}
	f.m.mu.Lock()
	f.m.lastSeen[a] = start.Add(-5 * time.Second)
	f.m.mu.Unlock()
	f.m.checkNodes(start)
	if !slices.Equal(f.dead, []ids.NodeID{a}) {
		t.Fatalf("got dead nodes %v, want [%s]", f.dead, a)
	}
	if !slices.Equal(f.dropped, []string{"a"}) {
		t.Fatalf("got dropped connections %v, want [a]", f.dropped)
	}
	alive := f.m.aliveNodes()
	if len(alive) != 1 || alive[0].ID != b || alive[0].Available["CPU"] != 1 {
		t.Fatalf("got alive %v, want only b with 1 CPU available", alive)
	}
	if _, ok := f.m.aliveAddress(a); ok {
		t.Fatal("aliveAddress found the dead node")
	}
	// A dead node is told to register again, and refused under its old ID.
	resp, err := f.m.heartbeatNode(&pb.HeartbeatRequest{NodeId: a[:]})
	if err != nil || !resp.GetReregister() {
		t.Fatalf("heartbeat of a dead node: got %v, %v, want reregister", resp, err)
	}
	_, err = f.m.register(&pb.RegisterNodeRequest{NodeId: a[:], Address: "a"})
	if !errors.Is(err, errs.ErrNodeDied) {
		t.Fatalf("register under a dead ID: got %v, want node died", err)
	}
}

func TestNodeManagerSameAddressReplacesOldIncarnation(t *testing.T) {
	f := newNodeFixture(t)
	old := f.register(t, "a", 2)
	f.register(t, "a", 2)
	if !slices.Equal(f.dead, []ids.NodeID{old}) {
		t.Fatalf("got dead nodes %v, want the old incarnation %s", f.dead, old)
	}
	if got := len(f.m.aliveNodes()); got != 1 {
		t.Fatalf("got %d alive nodes, want 1", got)
	}
}

func TestNodeManagerChargesAndBundles(t *testing.T) {
	f := newNodeFixture(t)
	id := f.register(t, "a", 4)
	f.m.chargeActor(id, map[string]float64{"CPU": 1})
	if got := f.m.aliveNodes()[0].Available["CPU"]; got != 3 {
		t.Fatalf("got %v CPU available after charging 1, want 3", got)
	}
	pg := ids.NewPlacementGroupID(ids.JobIDFromUint32(1))
	f.m.commitBundle(id, pg, 0, map[string]float64{"CPU": 2})
	n := f.m.aliveNodes()[0]
	if n.Available["CPU"] != 1 || len(n.Total) <= 1 {
		t.Fatalf("after committing a 2 CPU bundle: got total %v available %v, want 1 CPU left and bundle resources", n.Total, n.Available)
	}
	f.m.returnBundle(id, pg, 0, map[string]float64{"CPU": 2})
	n = f.m.aliveNodes()[0]
	if n.Available["CPU"] != 3 || len(n.Total) != 1 {
		t.Fatalf("after returning the bundle: got total %v available %v, want 3 CPU and no bundle resources", n.Total, n.Available)
	}
}

// TestNodeManagerHeartbeatKeepsCommittedBundles: which bundles a node holds
// is the head's to say (commitBundle, returnBundle); a heartbeat reports
// their amounts, but cannot add a bundle the head did not commit there (one
// a failed attempt reserved and is giving back) nor drop one it did (a
// heartbeat sent before the commit).
func TestNodeManagerHeartbeatKeepsCommittedBundles(t *testing.T) {
	f := newNodeFixture(t)
	id := f.register(t, "a", 4)
	job := ids.JobIDFromUint32(1)
	kept, stray := ids.NewPlacementGroupID(job), ids.NewPlacementGroupID(job)
	f.m.commitBundle(id, kept, 0, map[string]float64{"CPU": 1})
	keptIdx, keptAny := sched.IndexedName("CPU", kept, 0), sched.WildcardName("CPU", kept)
	strayIdx := sched.IndexedName("CPU", stray, 0)

	beat := func(total, avail map[string]float64) *NodeRecord {
		t.Helper()
		if _, err := f.m.heartbeatNode(&pb.HeartbeatRequest{NodeId: id[:],
			Total: &pb.Resources{Amounts: total}, Available: &pb.Resources{Amounts: avail}}); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		return f.m.aliveNodes()[0]
	}
	// The raylet also still reports a stray bundle it is returning.
	n := beat(map[string]float64{"CPU": 4, keptIdx: 1, keptAny: 1, strayIdx: 1},
		map[string]float64{"CPU": 2, keptIdx: 0.5, keptAny: 0.5, strayIdx: 1})
	if _, ok := n.Total[strayIdx]; ok {
		t.Errorf("total after a heartbeat listing a bundle the head did not commit: got %v, want %s dropped", n.Total, strayIdx)
	}
	if _, ok := n.Available[strayIdx]; ok {
		t.Errorf("available: got %v, want %s dropped", n.Available, strayIdx)
	}
	if n.Available[keptIdx] != 0.5 || n.Available["CPU"] != 2 {
		t.Errorf("available: got %v, want the heartbeat's amounts (%s 0.5, CPU 2)", n.Available, keptIdx)
	}
	// A heartbeat sent before the commit landed does not drop the bundle.
	n = beat(map[string]float64{"CPU": 4}, map[string]float64{"CPU": 3})
	if n.Total[keptIdx] != 1 || n.Total[keptAny] != 1 {
		t.Errorf("total after a heartbeat without the committed bundle: got %v, want %s and %s kept", n.Total, keptIdx, keptAny)
	}
	// Once the head returned it, a late heartbeat does not bring it back.
	f.m.returnBundle(id, kept, 0, map[string]float64{"CPU": 1})
	n = beat(map[string]float64{"CPU": 4, keptIdx: 1, keptAny: 1}, map[string]float64{"CPU": 3, keptIdx: 1, keptAny: 1})
	if len(n.Total) != 1 || len(n.Available) != 1 {
		t.Errorf("after the return and a late heartbeat: got total %v available %v, want CPU alone", n.Total, n.Available)
	}
}
