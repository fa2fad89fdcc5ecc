package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/protobuf/proto"
)

// maxBundles bounds one placement group.
const maxBundles = 1000

// pgState is one placement group as the head tracks it.
type pgState struct {
	info *pb.PlacementGroupInfo
	// nodes holds each bundle's node address once created.
	addrs []string
	// logged is set once the group's infeasibility was logged.
	logged bool
	// changed is closed and replaced when the group's state changes, for
	// GetPlacementGroup(wait) (a cluster-wide wake-up per change would cost
	// every waiter of every group a wake-up: quadratic with many groups).
	changed chan struct{}
}

func (p *pgState) bundles() []sched.Resources {
	out := make([]sched.Resources, len(p.info.GetBundles()))
	for i, b := range p.info.GetBundles() {
		out[i] = sched.Resources(b.GetAmounts()).Positive()
	}
	return out
}

// CreatePlacementGroup records a group and wakes the group scheduler, which
// reserves all its bundles or none (two-phase: prepare every bundle, then
// commit every one; a failed prepare returns the others).
func (s *Server) CreatePlacementGroup(_ context.Context, req *pb.CreatePlacementGroupRequest) (*pb.CreatePlacementGroupResponse, error) {
	id, err := ids.ParsePlacementGroupID(req.GetPlacementGroupId())
	if err != nil {
		return nil, invalid("CreatePlacementGroup: %v", err)
	}
	switch req.GetStrategy() {
	case pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK, pb.PlacementStrategy_PLACEMENT_STRATEGY_SPREAD,
		pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK, pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD:
	default:
		return nil, invalid("CreatePlacementGroup: strategy %v: want PACK, SPREAD, STRICT_PACK or STRICT_SPREAD", req.GetStrategy())
	}
	if n := len(req.GetBundles()); n == 0 || n > maxBundles {
		return nil, invalid("CreatePlacementGroup: %d bundles, want 1 to %d", n, maxBundles)
	}
	for i, b := range req.GetBundles() {
		if err := checkResources(fmt.Sprintf("CreatePlacementGroup bundle %d", i), b); err != nil {
			return nil, err
		}
		if len(sched.Resources(b.GetAmounts()).Positive()) == 0 {
			return nil, invalid("CreatePlacementGroup: bundle %d asks for no resources", i)
		}
	}
	job := id.Job()
	info := &pb.PlacementGroupInfo{
		PlacementGroupId: id[:], Name: req.GetName(), Strategy: req.GetStrategy(),
		State: pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING, JobId: job[:],
	}
	for _, b := range req.GetBundles() {
		info.Bundles = append(info.Bundles, &pb.Resources{Amounts: sched.Resources(b.GetAmounts()).Positive()})
	}
	s.mu.Lock()
	if _, dup := s.pgs[id]; dup {
		s.mu.Unlock()
		return nil, invalid("CreatePlacementGroup: group %s already exists", id)
	}
	if err := s.store.PutPlacementGroup(info); err != nil {
		s.mu.Unlock()
		return nil, s.storeErr("placement group "+id.String(), err)
	}
	s.pgs[id] = &pgState{info: info, changed: make(chan struct{})}
	s.pgOrder = append(s.pgOrder, id)
	s.pgPending = append(s.pgPending, id)
	out := proto.Clone(info).(*pb.PlacementGroupInfo)
	s.notifyLocked()
	s.mu.Unlock()
	s.log.Info("placement group created", "group", id, "name", req.GetName(), "strategy", req.GetStrategy(), "bundles", len(info.Bundles))
	return &pb.CreatePlacementGroupResponse{PlacementGroup: out}, nil
}

// GetPlacementGroup returns a group; with wait it first waits while the
// group is pending.
func (s *Server) GetPlacementGroup(ctx context.Context, req *pb.GetPlacementGroupRequest) (*pb.GetPlacementGroupResponse, error) {
	id, err := ids.ParsePlacementGroupID(req.GetPlacementGroupId())
	if err != nil {
		return nil, invalid("GetPlacementGroup: %v", err)
	}
	for {
		s.mu.Lock()
		pg, ok := s.pgs[id]
		if !ok {
			s.mu.Unlock()
			return nil, notFound("", "placement group %s does not exist", id)
		}
		info := proto.Clone(pg.info).(*pb.PlacementGroupInfo)
		changed := pg.changed
		s.mu.Unlock()
		if !req.GetWait() || info.GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING {
			return &pb.GetPlacementGroupResponse{PlacementGroup: info}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, errs.New(errs.KindTimeout, info.GetName(), "placement group %s is still pending: %s", id, info.GetReason())
		case <-s.ctx.Done():
			return nil, errs.New(errs.KindShuttingDown, info.GetName(), "the head is shutting down")
		}
	}
}

// RemovePlacementGroup returns a group's bundles and stops the actors
// placed in it.
func (s *Server) RemovePlacementGroup(_ context.Context, req *pb.RemovePlacementGroupRequest) (*pb.RemovePlacementGroupResponse, error) {
	id, err := ids.ParsePlacementGroupID(req.GetPlacementGroupId())
	if err != nil {
		return nil, invalid("RemovePlacementGroup: %v", err)
	}
	s.mu.Lock()
	pg, ok := s.pgs[id]
	if !ok {
		s.mu.Unlock()
		return nil, notFound("", "placement group %s does not exist", id)
	}
	if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED {
		s.mu.Unlock()
		return &pb.RemovePlacementGroupResponse{}, nil
	}
	wasCreated := pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED
	pg.info.State = pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED
	close(pg.changed)
	pg.changed = make(chan struct{})
	s.savePGLocked(pg)
	if wasCreated {
		s.unchargeBundlesLocked(id, pg)
	}
	addrs := pg.addrs
	killed := 0
	for _, a := range s.store.ListActors() {
		if a.GetState() == pb.ActorState_ACTOR_STATE_DEAD || string(a.GetSpec().GetSchedulingStrategy().GetPlacementGroupId()) != string(id[:]) {
			continue
		}
		s.markActorDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "its placement group %s was removed", id).Proto())
		killed++
	}
	s.notifyLocked()
	s.mu.Unlock()
	if wasCreated {
		// The raylets stop what runs in the group and give its resources
		// back in the background: the caller need not wait for that (Ray's
		// removal is asynchronous too).
		s.wg.Go(func() { s.returnBundles(id, addrs, nil) })
	}
	s.log.Info("placement group removed", "group", id, "actors_stopped", killed)
	return &pb.RemovePlacementGroupResponse{}, nil
}

// returnBundles tells each bundle's raylet to give it back; only[i] false
// skips bundle i (nil: every bundle).
func (s *Server) returnBundles(id ids.PlacementGroupID, addrs []string, only []bool) {
	failed := s.eachBundle(addrs, only, func(ctx context.Context, c pb.NodeServiceClient, i int) error {
		_, err := c.ReturnBundle(ctx, &pb.ReturnBundleRequest{PlacementGroupId: id[:], BundleIndex: int32(i)})
		return err
	})
	for i, err := range failed {
		if err != nil {
			s.log.Warn("return placement group bundle", "group", id, "bundle", i, "raylet", addrs[i], "err", errs.FromStatus(err))
		}
	}
}

// eachBundle calls call for every bundle's raylet at once (skipping bundle
// i when addrs[i] is empty or only[i] is false; only nil: every bundle) and
// returns each call's error.
func (s *Server) eachBundle(addrs []string, only []bool, call func(ctx context.Context, c pb.NodeServiceClient, i int) error) []error {
	out := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		if addr == "" || (only != nil && !only[i]) {
			continue
		}
		wg.Go(func() {
			c, err := s.nodeClient(addr)
			if err == nil {
				ctx, cancel := context.WithTimeout(s.ctx, rayletCallTimeout)
				err = call(ctx, c, i)
				cancel()
			}
			out[i] = err
		})
	}
	wg.Wait()
	return out
}

// schedulePlacementGroups tries to create pending groups whenever the
// cluster changes, and at least every second, until Close.
func (s *Server) schedulePlacementGroups() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
		}
		s.mu.Lock()
		// Only groups still waiting are kept on the list (creation order):
		// a pass costs the waiting groups, not every group ever made.
		todo := s.pgPending[:0]
		for _, id := range s.pgPending {
			if pg := s.pgs[id]; pg != nil {
				switch pg.info.GetState() {
				case pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE:
					todo = append(todo, id)
				}
			}
		}
		s.pgPending = todo
		todo = slices.Clone(todo)
		s.mu.Unlock()
		for _, id := range todo {
			s.tryCreate(id)
		}
	}
}

// tryCreate plans a group on the alive nodes and reserves it, all or nothing.
func (s *Server) tryCreate(id ids.PlacementGroupID) {
	s.mu.Lock()
	pg := s.pgs[id]
	if pg == nil {
		s.mu.Unlock()
		return
	}
	bundles := pg.bundles()
	strategy := pg.info.GetStrategy()
	var alive []*NodeRecord
	for _, n := range s.store.ListNodes() {
		if n.Alive {
			alive = append(alive, n)
		}
	}
	slices.SortFunc(alive, func(a, b *NodeRecord) int { return compareNodeIDs(a.ID, b.ID) })
	totals := make([]sched.Resources, len(alive))
	avails := make([]sched.Resources, len(alive))
	for i, n := range alive {
		totals[i], avails[i] = n.Total, n.Available
	}
	if _, reason := planBundles(strategy, bundles, totals); reason != "" {
		s.setPGStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE, reason)
		if !pg.logged {
			pg.logged = true
			s.log.Warn("placement group infeasible: no set of alive nodes can hold it", "group", id, "name", pg.info.GetName(), "strategy", strategy, "reason", reason)
		}
		s.mu.Unlock()
		return
	}
	plan, reason := planBundles(strategy, bundles, avails)
	if reason != "" {
		s.setPGStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING, "waiting for resources: "+reason)
		s.mu.Unlock()
		return
	}
	addrs := make([]string, len(bundles))
	nodeIDs := make([][]byte, len(bundles))
	for i, n := range plan {
		addrs[i] = alive[n].Address
		nodeIDs[i] = slices.Clone(alive[n].ID[:])
	}
	s.mu.Unlock()

	// Every bundle on one node: one call there is all or nothing by itself,
	// so it prepares and commits at once.
	oneNode := !slices.ContainsFunc(addrs, func(a string) bool { return a != addrs[0] })
	// Phase one: prepare every bundle.
	failed := s.eachBundle(addrs, nil, func(ctx context.Context, c pb.NodeServiceClient, i int) error {
		_, err := c.PrepareBundle(ctx, &pb.PrepareBundleRequest{PlacementGroupId: id[:], BundleIndex: int32(i),
			Resources: &pb.Resources{Amounts: bundles[i]}, Commit: oneNode})
		return err
	})
	if i := slices.IndexFunc(failed, func(e error) bool { return e != nil }); i >= 0 {
		prepared := make([]bool, len(failed))
		for k, e := range failed {
			prepared[k] = e == nil
		}
		s.returnBundles(id, addrs, prepared)
		s.mu.Lock()
		s.setPGStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING,
			fmt.Sprintf("bundle %d could not be reserved on %s: %v", i, addrs[i], errs.FromStatus(failed[i])))
		s.mu.Unlock()
		return
	}
	// Removed while preparing?
	s.mu.Lock()
	removed := pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED
	s.mu.Unlock()
	if removed {
		s.returnBundles(id, addrs, nil)
		return
	}
	// Phase two: commit every bundle (done already on a single node).
	if !oneNode {
		failed = s.eachBundle(addrs, nil, func(ctx context.Context, c pb.NodeServiceClient, i int) error {
			_, err := c.CommitBundle(ctx, &pb.CommitBundleRequest{PlacementGroupId: id[:], BundleIndex: int32(i)})
			return err
		})
		if i := slices.IndexFunc(failed, func(e error) bool { return e != nil }); i >= 0 {
			s.returnBundles(id, addrs, nil)
			s.mu.Lock()
			s.setPGStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING,
				fmt.Sprintf("bundle %d could not be committed on %s: %v", i, addrs[i], errs.FromStatus(failed[i])))
			s.mu.Unlock()
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED {
		s.wg.Go(func() { s.returnBundles(id, addrs, nil) })
		return
	}
	pg.addrs = addrs
	pg.info.BundleNodeIds = nodeIDs
	// The head's view gets the bundles at once, so work placed in the group
	// right away need not wait for the raylets' next heartbeats.
	for i, n := range plan {
		rec, ok := s.store.GetNode(alive[n].ID)
		if !ok {
			continue
		}
		rec.Available.Sub(bundles[i])
		for r := range bundles[i] {
			rec.Available[r] = max(0, rec.Available[r])
		}
		committed := sched.CommittedResources(bundles[i], id, i)
		rec.Total.Add(committed)
		rec.Available.Add(committed)
		if err := s.store.PutNode(rec); err != nil {
			s.log.Error("scheduler store write failed", "what", "node "+rec.ID.String(), "err", err)
		}
	}
	s.setPGStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED, "")
	s.log.Info("placement group ready", "group", id, "name", pg.info.GetName(), "strategy", strategy, "bundles", len(bundles))
}

// unchargeBundlesLocked gives a removed group's bundles back in the head's
// view of its nodes, until their raylets' next heartbeats say the same.
func (s *Server) unchargeBundlesLocked(id ids.PlacementGroupID, pg *pgState) {
	for i, b := range pg.bundles() {
		if i >= len(pg.info.GetBundleNodeIds()) {
			break
		}
		nid, err := ids.ParseNodeID(pg.info.GetBundleNodeIds()[i])
		if err != nil {
			continue
		}
		rec, ok := s.store.GetNode(nid)
		if !ok {
			continue
		}
		committed := sched.CommittedResources(b, id, i)
		rec.Total.Sub(committed)
		rec.Available.Sub(committed)
		for r := range committed {
			if rec.Total[r] <= sched.Epsilon {
				delete(rec.Total, r)
				delete(rec.Available, r)
			}
		}
		rec.Available.AddCapped(b, rec.Total)
		if err := s.store.PutNode(rec); err != nil {
			s.log.Error("scheduler store write failed", "what", "node "+rec.ID.String(), "err", err)
		}
	}
}

func (s *Server) setPGStateLocked(pg *pgState, st pb.PlacementGroupState, reason string) {
	if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED {
		return
	}
	changed := pg.info.GetState() != st
	if changed || pg.info.GetReason() != reason {
		pg.info.State, pg.info.Reason = st, reason
		s.savePGLocked(pg)
	}
	if changed {
		close(pg.changed)
		pg.changed = make(chan struct{})
		s.notifyLocked()
	}
}

// savePGLocked persists a group's row. A failed write is logged: the group
// lives on in memory, and the next change writes it again.
func (s *Server) savePGLocked(pg *pgState) {
	if err := s.store.PutPlacementGroup(pg.info); err != nil {
		s.log.Error("scheduler store write failed", "what", "placement group", "err", err)
	}
}

// loadPlacementGroupsLocked rebuilds the group table from the store after a
// head restart: created groups keep their bundles (their raylets still hold
// them), pending ones are scheduled again.
func (s *Server) loadPlacementGroupsLocked() {
	stored := s.store.ListPlacementGroups()
	slices.SortFunc(stored, func(a, b *pb.PlacementGroupInfo) int {
		return cmp.Or(cmp.Compare(string(a.GetJobId()), string(b.GetJobId())),
			cmp.Compare(string(a.GetPlacementGroupId()), string(b.GetPlacementGroupId())))
	})
	for _, info := range stored {
		id, err := ids.ParsePlacementGroupID(info.GetPlacementGroupId())
		if err != nil {
			s.log.Error("stored placement group has a malformed ID", "err", err)
			continue
		}
		pg := &pgState{info: info, changed: make(chan struct{})}
		if info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
			pg.addrs = make([]string, len(info.GetBundleNodeIds()))
			for i, b := range info.GetBundleNodeIds() {
				if nid, err := ids.ParseNodeID(b); err == nil {
					if n, ok := s.store.GetNode(nid); ok {
						pg.addrs[i] = n.Address
					}
				}
			}
		}
		s.pgs[id] = pg
		s.pgOrder = append(s.pgOrder, id)
		s.pgPending = append(s.pgPending, id) // the scheduler drops it unless it waits
	}
}

// planBundles assigns each bundle to a node (an index into caps) by the
// strategy, fitting bundles into the capacities given (totals, to decide
// feasibility; available resources, to decide what can be reserved now). It
// returns a reason when the bundles do not fit.
func planBundles(strategy pb.PlacementStrategy, bundles, caps []sched.Resources) ([]int, string) {
	if len(caps) == 0 {
		return nil, "no alive node in the cluster"
	}
	switch strategy {
	case pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK:
		if plan := strictPack(bundles, caps); plan != nil {
			return plan, ""
		}
		return nil, "STRICT_PACK: no single node can hold every bundle: " + sched.Missing(sched.Sum(bundles...), caps)
	case pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD:
		if len(bundles) > len(caps) {
			return nil, fmt.Sprintf("STRICT_SPREAD: %d bundles need %d distinct nodes, the cluster has %d alive", len(bundles), len(bundles), len(caps))
		}
		if plan := strictSpread(bundles, caps); plan != nil {
			return plan, ""
		}
		return nil, "STRICT_SPREAD: the bundles do not fit on distinct nodes"
	case pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK:
		if plan := strictPack(bundles, caps); plan != nil {
			return plan, ""
		}
		if plan := firstFit(bundles, caps, false); plan != nil {
			return plan, ""
		}
	default: // SPREAD
		if len(bundles) <= len(caps) {
			if plan := strictSpread(bundles, caps); plan != nil {
				return plan, ""
			}
		}
		if plan := firstFit(bundles, caps, true); plan != nil {
			return plan, ""
		}
	}
	for i, b := range bundles {
		if !slices.ContainsFunc(caps, b.FitsIn) {
			return nil, fmt.Sprintf("bundle %d: %s", i, sched.Missing(b, caps))
		}
	}
	return nil, "the bundles do not fit on the alive nodes together"
}

// strictPack puts every bundle on the fitting node with the most room.
func strictPack(bundles, caps []sched.Resources) []int {
	all := sched.Sum(bundles...)
	best := -1
	for i, c := range caps {
		if all.FitsIn(c) && (best < 0 || room(c) > room(caps[best])) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	plan := make([]int, len(bundles))
	for i := range plan {
		plan[i] = best
	}
	return plan
}

// strictSpread puts every bundle on a distinct node, largest bundles first,
// backtracking when a greedy choice strands a later bundle.
func strictSpread(bundles, caps []sched.Resources) []int {
	order := make([]int, len(bundles))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(room(bundles[b]), room(bundles[a])) })
	plan := make([]int, len(bundles))
	used := make([]bool, len(caps))
	steps := 0
	var place func(k int) bool
	place = func(k int) bool {
		if k == len(order) {
			return true
		}
		if steps++; steps > 100_000 {
			return false
		}
		b := bundles[order[k]]
		for n, c := range caps {
			if used[n] || !b.FitsIn(c) {
				continue
			}
			used[n], plan[order[k]] = true, n
			if place(k + 1) {
				return true
			}
			used[n] = false
		}
		return false
	}
	if !place(0) {
		return nil
	}
	return plan
}

// firstFit places bundles largest first, each on the node with the most
// room left (spread) or the first node it fits (pack), reusing nodes.
func firstFit(bundles, caps []sched.Resources, spread bool) []int {
	left := make([]sched.Resources, len(caps))
	for i, c := range caps {
		left[i] = c.Clone()
	}
	order := make([]int, len(bundles))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(room(bundles[b]), room(bundles[a])) })
	plan := make([]int, len(bundles))
	for _, bi := range order {
		pick := -1
		for n, c := range left {
			if !bundles[bi].FitsIn(c) {
				continue
			}
			if pick < 0 || (spread && room(c) > room(left[pick])) {
				pick = n
				if !spread {
					break
				}
			}
		}
		if pick < 0 {
			return nil
		}
		left[pick].Sub(bundles[bi])
		plan[bi] = pick
	}
	return plan
}

// room is a rough size of a resource set, for ordering.
func room(m sched.Resources) float64 {
	t := 0.0
	for r, v := range m {
		if r == "memory" {
			v /= 1 << 30
		}
		t += v
	}
	return t
}

// GetClusterState is the state API: nodes, actors, placement groups and the
// requests waiting as infeasible.
func (s *Server) GetClusterState(context.Context, *pb.GetClusterStateRequest) (*pb.GetClusterStateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pb.GetClusterStateResponse{Nodes: s.nodeInfosLocked()}
	for _, a := range s.store.ListActors() {
		resp.Actors = append(resp.Actors, a)
	}
	for _, id := range s.pgOrder {
		pg := s.pgs[id]
		resp.PlacementGroups = append(resp.PlacementGroups, proto.Clone(pg.info).(*pb.PlacementGroupInfo))
		if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE {
			name := pg.info.GetName()
			if name == "" {
				name = id.String()
			}
			resp.Infeasible = append(resp.Infeasible, &pb.InfeasibleRequest{Kind: "placement_group", Name: name,
				Resources: &pb.Resources{Amounts: sched.Sum(pg.bundles()...)}, Reason: pg.info.GetReason(), JobId: pg.info.GetJobId()})
		}
	}
	for _, r := range s.waitingActors {
		resp.Infeasible = append(resp.Infeasible, r)
	}
	for _, rs := range s.rayletInfeasible {
		resp.Infeasible = append(resp.Infeasible, rs...)
	}
	return resp, nil
}
