package scheduler

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// RegisterNode adds a node, or replaces the alive node with the same ID (a
// raylet registering again after a head restart). An alive node at the same
// address under another ID is a restarted raylet: the old incarnation is
// declared dead. A node ID the head declared dead is refused with a
// node-died error: that incarnation is over, and its raylet joins again
// under a new ID.
func (s *Server) RegisterNode(_ context.Context, req *pb.RegisterNodeRequest) (*pb.RegisterNodeResponse, error) {
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

	s.mu.Lock()
	if prev, ok := s.store.GetNode(id); ok && !prev.Alive {
		// Ray's rule: a node declared dead stays dead (its actors were
		// declared dead with it); its raylet must join as a new node.
		s.mu.Unlock()
		return nil, errs.New(errs.KindNodeDied, "", "node %s was declared dead; join again as a new node (new node ID)", id)
	}
	now := time.Now()
	var dropped []string
	for _, old := range s.store.ListNodes() {
		if old.Alive && old.ID != id && old.Address == req.GetAddress() {
			s.markNodeDeadLocked(old, fmt.Sprintf("node %s re-registered at the same address %s", id, old.Address))
		}
	}
	rec := &NodeRecord{ID: id, Address: req.GetAddress(), Total: total, Available: maps.Clone(total), Alive: true, IsHead: req.GetIsHead()}
	prev, known := s.store.GetNode(id)
	if known {
		if prev.Address != rec.Address {
			dropped = append(dropped, prev.Address)
		}
	}
	err = s.store.PutNode(rec)
	if err == nil {
		s.lastSeen[id] = now
		s.notifyLocked()
	}
	s.mu.Unlock()
	if err != nil {
		return nil, s.storeErr("node "+id.String(), err)
	}
	for _, addr := range dropped {
		s.dropConn(addr)
	}
	s.log.Info("node registered", "node", id, "address", rec.Address, "resources", total, "reregistered", known)
	return &pb.RegisterNodeResponse{HeartbeatIntervalMs: uint32(s.cfg.HeartbeatInterval.Milliseconds())}, nil
}

// Heartbeat records a node's available resources and answers with the node
// table and the recently finished jobs. A node the head does not know, or
// holds for dead, is told to register again.
func (s *Server) Heartbeat(_ context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	id, err := ids.ParseNodeID(req.GetNodeId())
	if err != nil {
		return nil, invalid("Heartbeat: %v", err)
	}
	if err := checkResources("Heartbeat", req.GetAvailable()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.store.GetNode(id)
	if !ok || !rec.Alive {
		return &pb.HeartbeatResponse{Reregister: true}, nil
	}
	now := time.Now()
	s.lastSeen[id] = now
	if err := checkResources("Heartbeat", req.GetTotal()); err != nil {
		return nil, err
	}
	if avail := req.GetAvailable(); avail != nil {
		rec.Available = maps.Clone(avail.GetAmounts())
		if rec.Available == nil {
			rec.Available = sched.Resources{}
		}
		if total := req.GetTotal(); total != nil && !maps.Equal(total.GetAmounts(), rec.Total) {
			// Bundles of placement groups came or went.
			rec.Total = maps.Clone(total.GetAmounts())
			s.notifyLocked()
		}
		if err := s.store.PutNode(rec); err != nil {
			return nil, s.storeErr("node "+id.String(), err)
		}
	}
	if inf := req.GetInfeasible(); len(inf) > 0 {
		s.rayletInfeasible[id] = inf
	} else {
		delete(s.rayletInfeasible, id)
	}
	s.pruneFinishedLocked(now)
	resp := &pb.HeartbeatResponse{Nodes: s.nodeInfosLocked()}
	for _, f := range s.finished {
		resp.FinishedJobIds = append(resp.FinishedJobIds, f.id[:])
	}
	return resp, nil
}

// ListNodes lists every node the head knows, dead ones included.
func (s *Server) ListNodes(context.Context, *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &pb.ListNodesResponse{Nodes: s.nodeInfosLocked()}, nil
}

func (s *Server) nodeInfosLocked() []*pb.NodeInfo {
	nodes := s.store.ListNodes()
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

func (s *Server) pruneFinishedLocked(now time.Time) {
	i := 0
	for i < len(s.finished) && now.Sub(s.finished[i].at) >= finishedJobRetention {
		i++
	}
	s.finished = s.finished[i:]
}

// monitorNodes declares nodes dead when they miss heartbeats, until Close.
func (s *Server) monitorNodes() {
	tick := s.cfg.NodeTimeout / 4
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.checkNodes(now)
			s.checkOrphanJobs(now)
		}
	}
}

func (s *Server) checkNodes(now time.Time) {
	var dead []string
	s.mu.Lock()
	s.pruneFinishedLocked(now)
	for _, n := range s.store.ListNodes() {
		if !n.Alive {
			continue
		}
		seen, ok := s.lastSeen[n.ID]
		if !ok {
			seen = now
			s.lastSeen[n.ID] = now
		}
		if silent := now.Sub(seen); silent > s.cfg.NodeTimeout {
			s.markNodeDeadLocked(n, fmt.Sprintf("no heartbeat for %s", silent.Round(time.Millisecond)))
			dead = append(dead, n.Address)
		}
	}
	// Keep connections another alive node still uses.
	for _, n := range s.store.ListNodes() {
		if n.Alive {
			dead = slices.DeleteFunc(dead, func(a string) bool { return a == n.Address })
		}
	}
	s.mu.Unlock()
	for _, addr := range dead {
		s.dropConn(addr)
	}
}

// markNodeDeadLocked declares n dead and its actors with it.
func (s *Server) markNodeDeadLocked(n *NodeRecord, reason string) {
	n.Alive = false
	delete(s.rayletInfeasible, n.ID)
	s.notifyLocked()
	if err := s.store.PutNode(n); err != nil {
		s.log.Error("scheduler store write failed", "what", "node "+n.ID.String(), "err", err)
	}
	delete(s.lastSeen, n.ID)
	id := n.ID
	killed := 0
	for aid := range s.byNode[n.ID] {
		a, ok := s.store.GetActor(aid)
		if !ok {
			continue
		}
		cause := errs.New(errs.KindNodeDied, a.GetSpec().GetTypeName(), "actor %s died with its node %s (%s): %s", aid, id, n.Address, reason)
		cause.NodeID = id[:]
		if a.GetState() == pb.ActorState_ACTOR_STATE_ALIVE {
			s.actorFailedLocked(a, cause.Proto())
		} else {
			s.markActorDeadLocked(a, cause.Proto())
		}
		killed++
	}
	s.log.Warn("node dead", "node", n.ID, "address", n.Address, "reason", reason, "actors_lost", killed)
}
