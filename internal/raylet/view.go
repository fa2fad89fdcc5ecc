package raylet

import (
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// clusterView is this raylet's picture of the other nodes: the node table of
// the last heartbeat reply (or ListNodes refresh), and the lease history,
// the leases this raylet granted here or spilled to each node within
// loadWindow, which is the default strategy's load (SPREAD counts its own
// decisions: leaseManager.spreadLoadsLocked).
//
// The heartbeat loop and view refreshes call set; lease requests call the
// rest from their handlers' goroutines. mu guards every field below it; the
// view calls no other manager, so it may be called with any other lock held
// (it is the innermost lock).
type clusterView struct {
	mu      sync.Mutex
	nodes   []*pb.NodeInfo             // guarded by mu
	changed chan struct{}              // guarded by mu: closed and replaced when nodes change
	recent  map[ids.NodeID][]time.Time // guarded by mu: lease events per node, oldest first
}

func newClusterView() *clusterView {
	return &clusterView{changed: make(chan struct{}), recent: make(map[ids.NodeID][]time.Time)}
}

// set replaces the node table and wakes whoever waits on the old one.
func (v *clusterView) set(nodes []*pb.NodeInfo) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.nodes = nodes
	close(v.changed)
	v.changed = make(chan struct{})
}

// markDead marks node id dead in the table, as the head declared it, until
// the next heartbeat reply (which says the same) replaces the table. The
// table's entries are shared with snapshots, so the entry is copied.
func (v *clusterView) markDead(id []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, n := range v.nodes {
		if string(n.GetNodeId()) != string(id) || !n.GetAlive() {
			continue
		}
		nodes := slices.Clone(v.nodes)
		dead := proto.Clone(n).(*pb.NodeInfo)
		dead.Alive = false
		nodes[i] = dead
		v.nodes = nodes
		close(v.changed)
		v.changed = make(chan struct{})
		return
	}
}

// snapshot is the node table (not to be modified) and a channel closed when
// it is replaced.
func (v *clusterView) snapshot() ([]*pb.NodeInfo, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.nodes, v.changed
}

// node is the table's entry of node id, or nil.
func (v *clusterView) node(id ids.NodeID) *pb.NodeInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range v.nodes {
		if string(n.GetNodeId()) == string(id[:]) {
			return n
		}
	}
	return nil
}

// noteLease records a lease granted here or spilled to node, for the
// default strategy's load.
func (v *clusterView) noteLease(node []byte) {
	id, err := ids.ParseNodeID(node)
	if err != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	ev := append(v.recent[id], time.Now())
	if len(ev) > maxRecent {
		ev = ev[len(ev)-maxRecent:]
	}
	v.recent[id] = ev
}

// load counts node id's lease events within loadWindow of now, forgetting
// older ones.
func (v *clusterView) load(id ids.NodeID, now time.Time) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	ev := v.recent[id]
	i := 0
	for i < len(ev) && now.Sub(ev[i]) > loadWindow {
		i++
	}
	if i == len(ev) {
		delete(v.recent, id)
		return 0
	}
	if i > 0 {
		v.recent[id] = ev[i:]
	}
	return len(ev) - i
}

// candidates lists the alive nodes of nodes other than self, with their
// lease load; infos[i] is the table's entry of out[i].
func candidates(view nodeView, self ids.NodeID, nodes []*pb.NodeInfo, now time.Time) (out []sched.Node, infos []*pb.NodeInfo) {
	for _, n := range nodes {
		if !n.GetAlive() || n.GetAddress() == "" || string(n.GetNodeId()) == string(self[:]) {
			continue
		}
		id, err := ids.ParseNodeID(n.GetNodeId())
		if err != nil {
			continue
		}
		out = append(out, sched.Node{ID: n.GetNodeId(), Total: n.GetTotal().GetAmounts(), Available: n.GetAvailable().GetAmounts(), Load: view.load(id, now)})
		infos = append(infos, n)
	}
	return out, infos
}
