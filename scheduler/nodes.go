package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// nodeManager owns the node table (Ray's GcsNodeManager): registrations,
// heartbeats and liveness, the lease requests each raylet holds as
// infeasible, and the cluster view handed to the scheduling policy (copies
// of the alive nodes' records).
//
// Callers: the gRPC handlers RegisterNode, Heartbeat, ListNodes and
// GetClusterState; the node monitor goroutine (checkNodes); the actor and
// placement group managers, which ask for alive nodes and charge resources
// in the head's view.
//
// Lock: mu guards lastSeen, rayletInfeasible and every read-modify-write of
// the node rows in the store (this manager is their only writer). It is a
// leaf among the managers' locks: other managers may call in while holding
// their own lock, and mu is never held while calling another manager; the
// node-death callback runs after mu is released.
type nodeManager struct {
	log         *slog.Logger
	store       Store
	feed        *changeFeed
	heartbeat   time.Duration
	nodeTimeout time.Duration
	// dropConn closes the cached connection to a raylet's address.
	dropConn func(addr string)
	// onDead is told, without mu held, that a node was declared dead, and
	// returns how many actors died with it.
	onDead func(id ids.NodeID, addr, reason string) int
	// probe connects to a raylet's address and hangs up (dialProbe; a fake
	// in tests). It is called without mu held, one call per node at a time
	// (probes), by the ReportUnreachable handlers.
	probe  func(ctx context.Context, addr string) error
	probes singleflight.Group // by node ID

	mu               sync.Mutex
	lastSeen         map[ids.NodeID]time.Time               // guarded by mu
	rayletInfeasible map[ids.NodeID][]*pb.InfeasibleRequest // guarded by mu
}

func newNodeManager(log *slog.Logger, store Store, feed *changeFeed, heartbeat, nodeTimeout time.Duration) *nodeManager {
	return &nodeManager{
		log: log, store: store, feed: feed, heartbeat: heartbeat, nodeTimeout: nodeTimeout,
		dropConn:         func(string) {},
		onDead:           func(ids.NodeID, string, string) int { return 0 },
		probe:            dialProbe,
		lastSeen:         make(map[ids.NodeID]time.Time),
		rayletInfeasible: make(map[ids.NodeID][]*pb.InfeasibleRequest),
	}
}

// load gives every node the store holds alive a full timeout to heartbeat
// the new head.
func (m *nodeManager) load(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.store.ListNodes() {
		if n.Alive {
			m.lastSeen[n.ID] = now
		}
	}
}

// deadNode is a node declared dead, for the callback run after mu is
// released.
type deadNode struct {
	id           ids.NodeID
	addr, reason string
}

// register adds a node, or replaces the alive node with the same ID (a
// raylet registering again after a head restart). An alive node at the same
// address under another ID is a restarted raylet: the old incarnation is
// declared dead. A node ID the head declared dead is refused with a
// node-died error: that incarnation is over, and its raylet joins again
// under a new ID.
func (m *nodeManager) register(req *pb.RegisterNodeRequest) (*pb.RegisterNodeResponse, error) {
	id, err := ids.ParseNodeID(req.GetNodeId())
	if err != nil {
		return nil, invalid("RegisterNode: %v", err)
	}
	if req.GetAddress() == "" {
		return nil, invalid("RegisterNode: node %s has no address", id)
	}
	if err := checkResources("RegisterNode", req.GetTotal()); err != nil {
		return nil, err
	}
	total := sched.Resources(req.GetTotal().GetAmounts()).Clone()
	if total == nil {
		total = sched.Resources{}
	}

	m.mu.Lock()
	if prev, ok := m.store.GetNode(id); ok && !prev.Alive {
		// Ray's rule: a node declared dead stays dead (its actors were
		// declared dead with it); its raylet must join as a new node.
		m.mu.Unlock()
		return nil, errs.New(errs.KindNodeDied, "", "node %s was declared dead; join again as a new node (new node ID)", id)
	}
	now := time.Now()
	var dropped []string
	var dead []deadNode
	for _, old := range m.store.ListNodes() {
		if old.Alive && old.ID != id && old.Address == req.GetAddress() {
			dead = append(dead, m.markDeadLocked(old, fmt.Sprintf("node %s re-registered at the same address %s", id, old.Address)))
		}
	}
	rec := &NodeRecord{ID: id, Address: req.GetAddress(), Total: total, Available: maps.Clone(total), Alive: true, IsHead: req.GetIsHead()}
	prev, known := m.store.GetNode(id)
	if known && prev.Address != rec.Address {
		dropped = append(dropped, prev.Address)
	}
	err = m.store.PutNode(rec)
	if err == nil {
		m.lastSeen[id] = now
		m.feed.Notify()
	}
	m.mu.Unlock()
	m.reportDead(dead)
	if err != nil {
		return nil, storeErr(m.log, "node "+id.String(), err)
	}
	for _, addr := range dropped {
		m.dropConn(addr)
	}
	m.log.Info("node registered", "node", id, "address", rec.Address, "resources", total, "reregistered", known)
	return &pb.RegisterNodeResponse{HeartbeatIntervalMs: uint32(m.heartbeat.Milliseconds())}, nil
}

// heartbeat records a node's available resources and answers with the node
// table (the caller adds the finished jobs). A node the head does not know,
// or holds for dead, is told to register again.
func (m *nodeManager) heartbeatNode(req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	id, err := ids.ParseNodeID(req.GetNodeId())
	if err != nil {
		return nil, invalid("Heartbeat: %v", err)
	}
	if err := checkResources("Heartbeat", req.GetAvailable()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.store.GetNode(id)
	if !ok || !rec.Alive {
		return &pb.HeartbeatResponse{Reregister: true}, nil
	}
	m.lastSeen[id] = time.Now()
	if err := checkResources("Heartbeat", req.GetTotal()); err != nil {
		return nil, err
	}
	if avail := req.GetAvailable(); avail != nil {
		total := rec.Total
		if t := req.GetTotal(); t != nil {
			total = maps.Clone(sched.Resources(t.GetAmounts()))
		}
		available := maps.Clone(sched.Resources(avail.GetAmounts()))
		if available == nil {
			available = sched.Resources{}
		}
		keepCommittedBundles(rec, total, available)
		rec.Available = available
		if !maps.Equal(total, rec.Total) {
			// Bundles of placement groups came or went.
			rec.Total = total
			m.feed.Notify()
		}
		if err := m.store.PutNode(rec); err != nil {
			return nil, storeErr(m.log, "node "+id.String(), err)
		}
	}
	if inf := req.GetInfeasible(); len(inf) > 0 {
		m.rayletInfeasible[id] = inf
	} else {
		delete(m.rayletInfeasible, id)
	}
	return &pb.HeartbeatResponse{Nodes: m.infosLocked()}, nil
}

// keepCommittedBundles makes the head's own record the authority on which
// placement group bundles a node holds: commitBundle and returnBundle set
// them when the placement group manager commits or returns one. A heartbeat
// reports the amounts of those, but a bundle resource the head did not
// commit there (one the raylet reserved in an attempt that failed and is
// being returned, reported before the return landed) is dropped, and one it
// committed that the heartbeat does not list yet (sent before the commit)
// is kept. Otherwise work placed in a group could be sent, for a heartbeat's
// time, to a node that is giving the bundle back.
func keepCommittedBundles(rec *NodeRecord, total, available sched.Resources) {
	// Only names the two sides disagree on are parsed: in the steady state
	// (the heartbeat agrees with the head) none is.
	for name := range total {
		if _, committed := rec.Total[name]; !committed && sched.IsBundleResource(name) {
			delete(total, name)
			delete(available, name)
		}
	}
	for name := range available {
		if _, listed := total[name]; !listed && sched.IsBundleResource(name) {
			delete(available, name)
		}
	}
	for name, amt := range rec.Total {
		if _, reported := total[name]; !reported && sched.IsBundleResource(name) {
			total[name] = amt
			available[name] = rec.Available[name]
		}
	}
}

// infos lists every node the head knows, dead ones included, by node ID.
func (m *nodeManager) infos() []*pb.NodeInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.infosLocked()
}

func (m *nodeManager) infosLocked() []*pb.NodeInfo {
	nodes := m.store.ListNodes()
	slices.SortFunc(nodes, func(a, b *NodeRecord) int { return compareNodeIDs(a.ID, b.ID) })
	out := make([]*pb.NodeInfo, len(nodes))
	for i, n := range nodes {
		out[i] = nodeInfo(n)
	}
	return out
}

func nodeInfo(n *NodeRecord) *pb.NodeInfo {
	id := n.ID
	return &pb.NodeInfo{
		NodeId:    id[:],
		Address:   n.Address,
		Total:     &pb.Resources{Amounts: maps.Clone(n.Total)},
		Available: &pb.Resources{Amounts: maps.Clone(n.Available)},
		Alive:     n.Alive,
		IsHead:    n.IsHead,
	}
}

// aliveNodes is the cluster view: copies of the alive nodes' records, by
// node ID. The caller may change them.
func (m *nodeManager) aliveNodes() []*NodeRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	var alive []*NodeRecord
	for _, n := range m.store.ListNodes() {
		if n.Alive {
			alive = append(alive, n)
		}
	}
	slices.SortFunc(alive, func(a, b *NodeRecord) int { return compareNodeIDs(a.ID, b.ID) })
	return alive
}

// aliveAddress is the address of node id when it is alive.
func (m *nodeManager) aliveAddress(id ids.NodeID) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.store.GetNode(id)
	if !ok || !n.Alive {
		return "", false
	}
	return n.Address, true
}

// address is the last known address of node id, alive or dead.
func (m *nodeManager) address(id ids.NodeID) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.store.GetNode(id)
	if !ok {
		return "", false
	}
	return n.Address, true
}

// infeasible lists the lease requests the raylets hold as infeasible.
func (m *nodeManager) infeasible() []*pb.InfeasibleRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*pb.InfeasibleRequest
	for _, rs := range m.rayletInfeasible {
		out = append(out, rs...)
	}
	return out
}

// chargeActor takes an actor's resources from an alive node's available
// resources in the head's view, until its next heartbeat reports the
// raylet's own numbers.
func (m *nodeManager) chargeActor(id ids.NodeID, res sched.Resources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.store.GetNode(id)
	if !ok || !n.Alive {
		return
	}
	for r, amt := range res {
		if _, has := n.Available[r]; has {
			n.Available[r] = max(0, n.Available[r]-amt)
		}
	}
	m.putLocked(n)
}

// commitBundle adds a reserved placement group bundle to a node in the
// head's view, so work placed in the group right away need not wait for the
// raylet's next heartbeat.
func (m *nodeManager) commitBundle(node ids.NodeID, pg ids.PlacementGroupID, i int, bundle sched.Resources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.store.GetNode(node)
	if !ok {
		return
	}
	rec.Available.Sub(bundle)
	for r := range bundle {
		rec.Available[r] = max(0, rec.Available[r])
	}
	committed := sched.CommittedResources(bundle, pg, i)
	rec.Total.Add(committed)
	rec.Available.Add(committed)
	m.putLocked(rec)
}

// returnBundle gives a removed group's bundle back in the head's view of
// its node, until the raylet's next heartbeat says the same.
func (m *nodeManager) returnBundle(node ids.NodeID, pg ids.PlacementGroupID, i int, bundle sched.Resources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.store.GetNode(node)
	if !ok {
		return
	}
	committed := sched.CommittedResources(bundle, pg, i)
	rec.Total.Sub(committed)
	rec.Available.Sub(committed)
	for r := range committed {
		if rec.Total[r] <= sched.Epsilon {
			delete(rec.Total, r)
			delete(rec.Available, r)
		}
	}
	rec.Available.AddCapped(bundle, rec.Total)
	m.putLocked(rec)
}

// putLocked writes a node row; a failure is logged (the next heartbeat
// writes it again).
func (m *nodeManager) putLocked(n *NodeRecord) {
	if err := m.store.PutNode(n); err != nil {
		m.log.Error("scheduler store write failed", "what", "node "+n.ID.String(), "err", err)
	}
}

// checkNodes declares dead the nodes that missed their heartbeat deadline.
func (m *nodeManager) checkNodes(now time.Time) {
	var dead []deadNode
	var addrs []string
	m.mu.Lock()
	for _, n := range m.store.ListNodes() {
		if !n.Alive {
			continue
		}
		seen, ok := m.lastSeen[n.ID]
		if !ok {
			seen = now
			m.lastSeen[n.ID] = now
		}
		if silent := now.Sub(seen); silent > m.nodeTimeout {
			dead = append(dead, m.markDeadLocked(n, fmt.Sprintf("no heartbeat for %s", silent.Round(time.Millisecond))))
			addrs = append(addrs, n.Address)
		}
	}
	// Keep connections another alive node still uses.
	for _, n := range m.store.ListNodes() {
		if n.Alive {
			addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == n.Address })
		}
	}
	m.mu.Unlock()
	m.reportDead(dead)
	for _, addr := range addrs {
		m.dropConn(addr)
	}
}

// markDeadLocked declares n dead; the caller passes the result to
// reportDead once mu is released, so its actors die with it.
func (m *nodeManager) markDeadLocked(n *NodeRecord, reason string) deadNode {
	n.Alive = false
	delete(m.rayletInfeasible, n.ID)
	m.feed.Notify()
	m.putLocked(n)
	delete(m.lastSeen, n.ID)
	return deadNode{n.ID, n.Address, reason}
}

// reportDead tells onDead about each node declared dead. Called without mu.
func (m *nodeManager) reportDead(dead []deadNode) {
	for _, d := range dead {
		killed := m.onDead(d.id, d.addr, d.reason)
		m.log.Warn("node dead", "node", d.id, "address", d.addr, "reason", d.reason, "actors_lost", killed)
	}
}

// probeTimeout bounds the head's probe of a node reported unreachable. A
// raylet that does not accept a connection within it is not declared dead
// for that: only a refusal is evidence enough.
const probeTimeout = time.Second

// maxReportAddress bounds ReportUnreachableRequest.address.
const maxReportAddress = 256

// reportUnreachable handles a peer's report that node id's raylet, or a
// worker on it, refused or reset its connection: the head probes the
// node's raylet at the address in its own table (never the reported one)
// and declares the node dead at once when that connection is refused too.
// A probe that connects or times out changes nothing: a live but slow (or
// stopped) node is left to the heartbeat deadline, so that one report can
// never kill it. Concurrent reports of one node share one probe.
func (m *nodeManager) reportUnreachable(req *pb.ReportUnreachableRequest) (*pb.ReportUnreachableResponse, error) {
	id, err := ids.ParseNodeID(req.GetNodeId())
	if err != nil {
		return nil, invalid("ReportUnreachable: %v", err)
	}
	if len(req.GetAddress()) > maxReportAddress {
		return nil, invalid("ReportUnreachable: address is %d bytes, at most %d", len(req.GetAddress()), maxReportAddress)
	}
	m.mu.Lock()
	n, ok := m.store.GetNode(id)
	m.mu.Unlock()
	switch {
	case !ok:
		return nil, errs.New(errs.KindNotFound, "", "ReportUnreachable: node %s is not in the head's node table", id)
	case !n.Alive:
		return &pb.ReportUnreachableResponse{Dead: true}, nil
	}
	dead, _, _ := m.probes.Do(id.String(), func() (any, error) {
		return m.probeNode(id, n.Address, req.GetAddress()), nil
	})
	return &pb.ReportUnreachableResponse{Dead: dead.(bool)}, nil
}

// probeNode probes the raylet of node id at addr and declares the node dead
// when it refuses the connection; it reports whether the node is dead.
func (m *nodeManager) probeNode(id ids.NodeID, addr, reported string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	err := m.probe(ctx, addr)
	cancel()
	if !errors.Is(err, syscall.ECONNREFUSED) {
		m.log.Debug("node reported unreachable, but its raylet did not refuse the probe: left to its heartbeats", "node", id, "address", addr, "reported", reported, "probe_err", err)
		m.mu.Lock()
		defer m.mu.Unlock()
		n, ok := m.store.GetNode(id)
		return ok && !n.Alive
	}
	m.mu.Lock()
	n, ok := m.store.GetNode(id)
	if !ok || !n.Alive || n.Address != addr {
		// Declared dead meanwhile, or registered again elsewhere.
		m.mu.Unlock()
		return ok && !n.Alive
	}
	d := m.markDeadLocked(n, fmt.Sprintf("its raylet at %s refused a connection (probed when a peer could not reach %s)", addr, reported))
	m.mu.Unlock()
	m.reportDead([]deadNode{d})
	m.dropConn(addr)
	return true
}

// dialProbe connects to addr over TCP and hangs up at once.
func dialProbe(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}
