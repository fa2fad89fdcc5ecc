package core

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Replicated objects (objectstore.WithReplicas). A put asked for n copies
// is stored on this node, then pulled by n-1 other alive nodes, each told to
// keep its copy as a replica (spilled, never evicted, until freed). The
// owner keeps the copies' places in the object's entry; the location it
// hands to readers names the first of them and the others as replicas, so
// that a reader, or the raylet pulling for it, reads another copy when one
// is gone (the raylet resumes at the byte it reached). While it owns such
// objects, the owner checks the head's table of nodes every
// replicaCheckInterval: the copies on dead nodes are dropped and new ones
// placed until there are n again, or as many as there are alive nodes.

// MaxReplicas bounds the copies one put may ask for.
const MaxReplicas = 64

// replicaCheckInterval is how often an owner of replicated objects checks
// for copies lost with their nodes.
const replicaCheckInterval = time.Second

// replicaPullTimeout bounds one node's pull of a new replica.
const replicaPullTimeout = 2 * time.Minute

// replicaSet is the owner's record of a replicated object's copies,
// guarded by the object table's lock.
type replicaSet struct {
	want   int
	places []*pb.ObjectReplica // alive copies as last checked; [0] was put here
}

// replicator tracks the replicated objects this process owns while any is
// alive, and runs the loop that repairs them.
type replicator struct {
	mu      sync.Mutex
	tracked map[ids.ObjectID]*objEntry // guarded by mu
	running bool                       // guarded by mu: the loop runs
}

// PutReplicated is Put with n copies of the value on distinct nodes (n < 2:
// Put). Fewer alive nodes than n: a copy on each; the ref's Replicas says
// how many there are.
func (c *Core) PutReplicated(ctx context.Context, v any, n int) (Ref, error) {
	if err := checkReplicas(n); err != nil {
		return Ref{}, err
	}
	p, contained, err := c.encode(v)
	if err != nil {
		return Ref{}, errs.New(errs.KindInvalidArgument, "", "put: %v", err)
	}
	return c.putReplicated(ctx, p, contained, n)
}

// PutPayloadReplicated is PutReplicated of an encoded value.
func (c *Core) PutPayloadReplicated(ctx context.Context, p *pb.Payload, n int) (Ref, error) {
	if err := checkReplicas(n); err != nil {
		return Ref{}, err
	}
	return c.putReplicated(ctx, p, nil, n)
}

// checkReplicas refuses a replica count out of range.
func checkReplicas(n int) error {
	if n < 0 || n > MaxReplicas {
		return errs.New(errs.KindInvalidArgument, "", "put: %d replicas asked for; ask for 1 to %d", n, MaxReplicas)
	}
	return nil
}

func (c *Core) putReplicated(ctx context.Context, p *pb.Payload, contained []*handle, n int) (Ref, error) {
	if n < 2 {
		return c.putPayload(ctx, p, contained)
	}
	id := c.nextPutID()
	loc, err := c.storePayload(ctx, id, p)
	if err != nil {
		if c.localNodeGone(ctx, err) {
			return Ref{}, c.errLocalNodeGone(fmt.Sprintf("put a %d-byte value", len(p.GetData())), err)
		}
		return Ref{}, err
	}
	c.pressure.add(c, int64(len(p.GetData())))
	self := &pb.ObjectReplica{NodeId: loc.GetNodeId(), RayletAddress: loc.GetRayletAddress()}
	e := &objEntry{done: closedDone, loc: loc, settled: true, c: c, id: id,
		replicas: &replicaSet{want: n, places: []*pb.ObjectReplica{self}}}
	ref := c.settledRef(e, contained)
	added, err := c.placeReplicas(ctx, e, n-1, nil)
	if err != nil {
		ref.Release()
		return Ref{}, err
	}
	if have := 1 + added; have < n {
		c.log.Warn("fewer alive nodes than replicas asked for: the object has a copy on each", "object", id, "replicas", have, "asked", n)
	}
	c.repl.track(c, e)
	return ref, nil
}

// Replicas is how many nodes hold a copy of the object r names that its
// owner, this process, keeps: 1 for an object without replicas or with its
// value in the ref, 0 for a ref this process does not own or an object not
// stored (pending, failed, freed).
func (c *Core) Replicas(r Ref) int {
	info := r.Info()
	if info.Owner != c.addr {
		return 0
	}
	if r.h != nil && r.h.value != nil {
		return 1
	}
	e, ok := c.objs.lookup(info.ID)
	if !ok || !e.ready() || e.err != nil {
		return 0
	}
	c.objs.mu.Lock()
	defer c.objs.mu.Unlock()
	if e.replicas != nil {
		return len(e.replicas.places)
	}
	return 1
}

// readLocation is where readers are told object e is: its location, with
// the copies of a replicated object (the first alive one first, the others
// as replicas).
func (c *Core) readLocation(e *objEntry) *pb.ObjectLocation {
	if e.replicas == nil || e.loc == nil {
		return e.loc
	}
	c.objs.mu.Lock()
	defer c.objs.mu.Unlock()
	return locationOf(e.loc, e.replicas.places)
}

// locationOf is loc moved to the first of places, with the others as its
// replicas.
func locationOf(loc *pb.ObjectLocation, places []*pb.ObjectReplica) *pb.ObjectLocation {
	out := proto.CloneOf(loc)
	out.Replicas = nil
	if len(places) == 0 {
		return out
	}
	if !bytes.Equal(places[0].GetNodeId(), loc.GetNodeId()) {
		out.NodeId, out.RayletAddress = places[0].GetNodeId(), places[0].GetRayletAddress()
		out.InArena, out.ArenaOffset = false, 0 // where it is there, its raylet says
	}
	out.Replicas = append(out.Replicas, places[1:]...)
	return out
}

// nearestFirst is loc with the copy on node first, if one of its replicas
// is there: a reader on that node reads it without a transfer.
func nearestFirst(loc *pb.ObjectLocation, node ids.NodeID) *pb.ObjectLocation {
	if loc == nil || len(loc.GetReplicas()) == 0 || bytes.Equal(loc.GetNodeId(), node[:]) {
		return loc
	}
	for i, r := range loc.GetReplicas() {
		if !bytes.Equal(r.GetNodeId(), node[:]) {
			continue
		}
		places := make([]*pb.ObjectReplica, 0, len(loc.GetReplicas())+1)
		places = append(places, r, &pb.ObjectReplica{NodeId: loc.GetNodeId(), RayletAddress: loc.GetRayletAddress()})
		for k, o := range loc.GetReplicas() {
			if k != i {
				places = append(places, o)
			}
		}
		return locationOf(loc, places)
	}
	return loc
}

// copiesOf is each copy loc names as a location of its own: loc, then
// each replica first.
func copiesOf(loc *pb.ObjectLocation) []*pb.ObjectLocation {
	out := []*pb.ObjectLocation{loc}
	if len(loc.GetReplicas()) == 0 {
		return out
	}
	all := append([]*pb.ObjectReplica{{NodeId: loc.GetNodeId(), RayletAddress: loc.GetRayletAddress()}}, loc.GetReplicas()...)
	for i := 1; i < len(all); i++ {
		places := append([]*pb.ObjectReplica{all[i]}, all[:i]...)
		places = append(places, all[i+1:]...)
		out = append(out, locationOf(loc, places))
	}
	return out
}

// placeReplicas has up to k more alive nodes of nodes (nil: the head's
// table now), not holding one yet, pull a copy of e's object and keep it as
// a replica; it returns how many did.
func (c *Core) placeReplicas(ctx context.Context, e *objEntry, k int, nodes []*pb.NodeInfo) (int, error) {
	if nodes == nil {
		if c.head == nil {
			return 0, errs.New(errs.KindUnavailable, "", "put with replicas: this process has no head to find other nodes through")
		}
		lctx, cancel := context.WithTimeout(ctx, reportTimeout)
		resp, err := c.head.ListNodes(lctx, &pb.ListNodesRequest{})
		cancel()
		if err != nil {
			return 0, fmt.Errorf("put with replicas: list the cluster's nodes: %w", errs.FromStatus(err))
		}
		nodes = resp.GetNodes()
	}
	c.objs.mu.Lock()
	if e.freed {
		c.objs.mu.Unlock()
		return 0, nil
	}
	src := locationOf(e.loc, e.replicas.places)
	have := map[string]bool{}
	for _, p := range e.replicas.places {
		have[string(p.GetNodeId())] = true
	}
	c.objs.mu.Unlock()
	var candidates []*pb.NodeInfo
	for _, n := range nodes {
		if n.GetAlive() && n.GetAddress() != "" && !have[string(n.GetNodeId())] {
			candidates = append(candidates, n)
		}
	}
	rand.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	added := 0
	for len(candidates) > 0 && added < k {
		batch := candidates[:min(k-added, len(candidates))]
		candidates = candidates[len(batch):]
		placed := make([]bool, len(batch))
		var wg sync.WaitGroup
		for i, n := range batch {
			wg.Go(func() { placed[i] = c.pullReplica(ctx, e.id, src, n) })
		}
		wg.Wait()
		for i, n := range batch {
			if !placed[i] {
				continue
			}
			added++
			c.objs.addCopy(e, n.GetAddress())
			c.objs.mu.Lock()
			e.replicas.places = append(e.replicas.places, &pb.ObjectReplica{NodeId: n.GetNodeId(), RayletAddress: n.GetAddress()})
			c.objs.mu.Unlock()
		}
	}
	if ctx.Err() != nil {
		return added, errs.Context(ctx.Err(), "put with replicas")
	}
	return added, nil
}

// pullReplica asks node n's raylet to pull the object at src and keep it.
func (c *Core) pullReplica(ctx context.Context, id ids.ObjectID, src *pb.ObjectLocation, n *pb.NodeInfo) bool {
	cc, err := c.conns.get(n.GetAddress())
	if err != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, replicaPullTimeout)
	defer cancel()
	_, err = rpc.NewNodeClient(cc).PullObject(pctx, &pb.PullObjectRequest{ObjectId: id[:], Location: src, JobId: c.jobID[:], KeepAsReplica: true})
	if err != nil {
		c.log.Info("a node could not take a replica", "object", id, "node", fmt.Sprintf("%x", n.GetNodeId()), "raylet", n.GetAddress(), "err", err)
		return false
	}
	return true
}

// track adds e to the replicated objects the repair loop watches.
func (r *replicator) track(c *Core, e *objEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tracked == nil {
		r.tracked = map[ids.ObjectID]*objEntry{}
	}
	r.tracked[e.id] = e
	if !r.running {
		r.running = true
		c.wg.Go(func() { r.loop(c) })
	}
}

// loop repairs the tracked objects every replicaCheckInterval until none
// is left or the core shuts down.
func (r *replicator) loop(c *Core) {
	t := time.NewTicker(replicaCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		var live []*objEntry
		c.objs.mu.Lock()
		for id, e := range r.tracked {
			if e.freed {
				delete(r.tracked, id)
			} else {
				live = append(live, e)
			}
		}
		c.objs.mu.Unlock()
		if len(live) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		c.repairReplicas(live)
	}
}

// repairReplicas drops the copies of entries on nodes the head says are
// dead and places new ones, up to each entry's count.
func (c *Core) repairReplicas(entries []*objEntry) {
	ctx, cancel := context.WithTimeout(c.ctx, reportTimeout)
	resp, err := c.head.ListNodes(ctx, &pb.ListNodesRequest{})
	cancel()
	if err != nil {
		c.log.Debug("replicas: list the cluster's nodes", "err", err)
		return
	}
	alive := map[string]bool{}
	for _, n := range resp.GetNodes() {
		if n.GetAlive() {
			alive[string(n.GetNodeId())] = true
		}
	}
	for _, e := range entries {
		c.objs.mu.Lock()
		rs := e.replicas
		kept := rs.places[:0:0]
		for _, p := range rs.places {
			if alive[string(p.GetNodeId())] {
				kept = append(kept, p)
			}
		}
		lost := len(rs.places) - len(kept)
		rs.places = kept
		missing := rs.want - len(kept)
		c.objs.mu.Unlock()
		if lost > 0 {
			c.log.Info("replicas lost with their nodes", "object", e.id, "lost", lost, "left", len(kept))
		}
		if missing <= 0 {
			continue
		}
		if len(kept) == 0 {
			continue // every copy is gone: reads fail with ErrObjectLost
		}
		ctx, cancel := context.WithTimeout(c.ctx, replicaPullTimeout)
		added, _ := c.placeReplicas(ctx, e, missing, resp.GetNodes())
		cancel()
		if added > 0 {
			c.stats.Rereplicated.Add(int64(added))
			c.log.Info("object re-replicated", "object", e.id, "added", added, "replicas", len(kept)+added)
		}
	}
}
