package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
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
	// addrs holds each bundle's node address once created.
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

// pgNodes is the cluster view the placement group manager plans on (the
// node manager in the head, a fake in tests).
type pgNodes interface {
	// aliveNodes returns copies of the alive nodes' records, by node ID.
	aliveNodes() []*NodeRecord
	// address is the last known address of a node, alive or dead.
	address(id ids.NodeID) (string, bool)
	// commitBundle and returnBundle add a reserved bundle to a node's
	// resources in the head's view, and take it away again.
	commitBundle(node ids.NodeID, pg ids.PlacementGroupID, i int, bundle sched.Resources)
	returnBundle(node ids.NodeID, pg ids.PlacementGroupID, i int, bundle sched.Resources)
}

// pgActors is what the placement group manager asks of the actor manager.
type pgActors interface {
	// placementGroupRemoved declares the group's live actors dead and
	// returns how many.
	placementGroupRemoved(id ids.PlacementGroupID) int
}

// pgManager owns the placement groups (Ray's GcsPlacementGroupManager and
// its scheduler): the group table, the queue of groups waiting to be
// created and the scheduler loop that reserves each group's bundles on the
// raylets, all or nothing (two-phase: prepare every bundle, then commit
// every one; a failed prepare returns the others).
//
// Callers: the gRPC handlers CreatePlacementGroup, GetPlacementGroup,
// RemovePlacementGroup and GetClusterState; its scheduler loop goroutine
// (run) and bundle-return goroutines, tracked by wg.
//
// Lock: mu guards pgs, order, pending, every pgState and every write of the
// group rows in the store (this manager is their only writer). While
// holding mu it calls only leaves (the node view and the change feed);
// raylet calls and the actor manager run without mu.
type pgManager struct {
	log     *slog.Logger
	store   Store
	feed    *changeFeed
	nodes   pgNodes
	actors  pgActors
	raylets rayletClient
	// ctx ends when the head closes; wg tracks the goroutines started here.
	ctx context.Context
	wg  *sync.WaitGroup

	mu  sync.Mutex
	pgs map[ids.PlacementGroupID]*pgState // guarded by mu
	// order is the creation order of the groups in pgs.
	order []ids.PlacementGroupID // guarded by mu
	// pending are the groups not yet created (pending or infeasible), in
	// creation order; the scheduler loop drops the others as it goes.
	pending []ids.PlacementGroupID // guarded by mu
}

func newPGManager(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, store Store, feed *changeFeed, nodes pgNodes, actors pgActors, raylets rayletClient) *pgManager {
	return &pgManager{
		log: log, store: store, feed: feed, nodes: nodes, actors: actors, raylets: raylets, ctx: ctx, wg: wg,
		pgs: make(map[ids.PlacementGroupID]*pgState),
	}
}

// create records a group; the scheduler loop, woken by the change feed,
// reserves it.
func (m *pgManager) create(req *pb.CreatePlacementGroupRequest) (*pb.CreatePlacementGroupResponse, error) {
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
	m.mu.Lock()
	if _, dup := m.pgs[id]; dup {
		m.mu.Unlock()
		return nil, invalid("CreatePlacementGroup: group %s already exists", id)
	}
	if err := m.store.PutPlacementGroup(info); err != nil {
		m.mu.Unlock()
		return nil, storeErr(m.log, "placement group "+id.String(), err)
	}
	m.pgs[id] = &pgState{info: info, changed: make(chan struct{})}
	m.order = append(m.order, id)
	m.pending = append(m.pending, id)
	out := proto.Clone(info).(*pb.PlacementGroupInfo)
	m.feed.Notify()
	m.mu.Unlock()
	m.log.Info("placement group created", "group", id, "name", req.GetName(), "strategy", req.GetStrategy(), "bundles", len(info.Bundles))
	return &pb.CreatePlacementGroupResponse{PlacementGroup: out}, nil
}

// get returns a group; with wait it first waits while the group is pending.
func (m *pgManager) get(ctx context.Context, req *pb.GetPlacementGroupRequest) (*pb.GetPlacementGroupResponse, error) {
	id, err := ids.ParsePlacementGroupID(req.GetPlacementGroupId())
	if err != nil {
		return nil, invalid("GetPlacementGroup: %v", err)
	}
	for {
		m.mu.Lock()
		pg, ok := m.pgs[id]
		if !ok {
			m.mu.Unlock()
			return nil, notFound("", "placement group %s does not exist", id)
		}
		info := proto.Clone(pg.info).(*pb.PlacementGroupInfo)
		changed := pg.changed
		m.mu.Unlock()
		if !req.GetWait() || info.GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING {
			return &pb.GetPlacementGroupResponse{PlacementGroup: info}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, errs.New(errs.KindTimeout, info.GetName(), "placement group %s is still pending: %s", id, info.GetReason())
		case <-m.ctx.Done():
			return nil, errs.New(errs.KindShuttingDown, info.GetName(), "the head is shutting down")
		}
	}
}

// remove returns a group's bundles and stops the actors placed in it.
func (m *pgManager) remove(req *pb.RemovePlacementGroupRequest) (*pb.RemovePlacementGroupResponse, error) {
	id, err := ids.ParsePlacementGroupID(req.GetPlacementGroupId())
	if err != nil {
		return nil, invalid("RemovePlacementGroup: %v", err)
	}
	m.mu.Lock()
	pg, ok := m.pgs[id]
	if !ok {
		m.mu.Unlock()
		return nil, notFound("", "placement group %s does not exist", id)
	}
	if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED {
		m.mu.Unlock()
		return &pb.RemovePlacementGroupResponse{}, nil
	}
	wasCreated := pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED
	pg.info.State = pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED
	close(pg.changed)
	pg.changed = make(chan struct{})
	m.saveLocked(pg)
	if wasCreated {
		for i, b := range pg.bundles() {
			if i >= len(pg.info.GetBundleNodeIds()) {
				break
			}
			if nid, err := ids.ParseNodeID(pg.info.GetBundleNodeIds()[i]); err == nil {
				m.nodes.returnBundle(nid, id, i, b)
			}
		}
	}
	addrs := pg.addrs
	m.mu.Unlock()
	killed := m.actors.placementGroupRemoved(id)
	m.feed.Notify()
	if wasCreated {
		// The raylets stop what runs in the group and give its resources
		// back in the background: the caller need not wait for that (Ray's
		// removal is asynchronous too).
		m.wg.Go(func() { m.returnBundles(id, addrs, nil) })
	}
	m.log.Info("placement group removed", "group", id, "actors_stopped", killed)
	return &pb.RemovePlacementGroupResponse{}, nil
}

// returnBundles tells each bundle's raylet to give it back; only[i] false
// skips bundle i (nil: every bundle).
func (m *pgManager) returnBundles(id ids.PlacementGroupID, addrs []string, only []bool) {
	failed := m.eachBundle(addrs, only, func(ctx context.Context, addr string, i int) error {
		return m.raylets.ReturnBundle(ctx, addr, &pb.ReturnBundleRequest{PlacementGroupId: id[:], BundleIndex: int32(i)})
	})
	for i, err := range failed {
		if err != nil {
			m.log.Warn("return placement group bundle", "group", id, "bundle", i, "raylet", addrs[i], "err", errs.FromStatus(err))
		}
	}
}

// eachBundle calls call for every bundle's raylet at once (skipping bundle
// i when addrs[i] is empty or only[i] is false; only nil: every bundle) and
// returns each call's error.
func (m *pgManager) eachBundle(addrs []string, only []bool, call func(ctx context.Context, addr string, i int) error) []error {
	out := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		if addr == "" || (only != nil && !only[i]) {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(m.ctx, rayletCallTimeout)
			defer cancel()
			out[i] = call(ctx, addr, i)
		})
	}
	wg.Wait()
	return out
}

// run tries to create pending groups whenever the cluster changes, and at
// least every second, until ctx ends.
func (m *pgManager) run() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	changed := m.feed.C()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		// Taken before the pass: a change during the pass wakes the next.
		changed = m.feed.C()
		m.pass()
	}
}

// pass tries once to create every group still waiting, in creation order.
func (m *pgManager) pass() {
	m.mu.Lock()
	// Only groups still waiting are kept on the list (creation order): a
	// pass costs the waiting groups, not every group ever made.
	todo := m.pending[:0]
	for _, id := range m.pending {
		if pg := m.pgs[id]; pg != nil {
			switch pg.info.GetState() {
			case pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE:
				todo = append(todo, id)
			}
		}
	}
	m.pending = todo
	todo = slices.Clone(todo)
	m.mu.Unlock()
	for _, id := range todo {
		m.tryCreate(id)
	}
}

// tryCreate plans a group on the alive nodes and reserves it, all or nothing.
func (m *pgManager) tryCreate(id ids.PlacementGroupID) {
	m.mu.Lock()
	pg := m.pgs[id]
	if pg == nil {
		m.mu.Unlock()
		return
	}
	bundles := pg.bundles()
	strategy := pg.info.GetStrategy()
	alive := m.nodes.aliveNodes()
	totals := make([]sched.Resources, len(alive))
	avails := make([]sched.Resources, len(alive))
	for i, n := range alive {
		totals[i], avails[i] = n.Total, n.Available
	}
	if _, reason := planBundles(strategy, bundles, totals); reason != "" {
		m.setStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE, reason)
		if !pg.logged {
			pg.logged = true
			m.log.Warn("placement group infeasible: no set of alive nodes can hold it", "group", id, "name", pg.info.GetName(), "strategy", strategy, "reason", reason)
		}
		m.mu.Unlock()
		return
	}
	plan, reason := planBundles(strategy, bundles, avails)
	if reason != "" {
		m.setStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING, "waiting for resources: "+reason)
		m.mu.Unlock()
		return
	}
	addrs := make([]string, len(bundles))
	nodeIDs := make([][]byte, len(bundles))
	for i, n := range plan {
		addrs[i] = alive[n].Address
		nodeIDs[i] = slices.Clone(alive[n].ID[:])
	}
	m.mu.Unlock()

	// Every bundle on one node: one call there is all or nothing by itself,
	// so it prepares and commits at once.
	oneNode := !slices.ContainsFunc(addrs, func(a string) bool { return a != addrs[0] })
	// Phase one: prepare every bundle.
	failed := m.eachBundle(addrs, nil, func(ctx context.Context, addr string, i int) error {
		return m.raylets.PrepareBundle(ctx, addr, &pb.PrepareBundleRequest{PlacementGroupId: id[:], BundleIndex: int32(i),
			Resources: &pb.Resources{Amounts: bundles[i]}, Commit: oneNode})
	})
	if i := slices.IndexFunc(failed, func(e error) bool { return e != nil }); i >= 0 {
		prepared := make([]bool, len(failed))
		for k, e := range failed {
			prepared[k] = e == nil
		}
		m.returnBundles(id, addrs, prepared)
		m.mu.Lock()
		m.setStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING,
			fmt.Sprintf("bundle %d could not be reserved on %s: %v", i, addrs[i], errs.FromStatus(failed[i])))
		m.mu.Unlock()
		return
	}
	// Removed while preparing?
	m.mu.Lock()
	removed := pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED
	m.mu.Unlock()
	if removed {
		m.returnBundles(id, addrs, nil)
		return
	}
	// Phase two: commit every bundle (done already on a single node).
	if !oneNode {
		failed = m.eachBundle(addrs, nil, func(ctx context.Context, addr string, i int) error {
			return m.raylets.CommitBundle(ctx, addr, &pb.CommitBundleRequest{PlacementGroupId: id[:], BundleIndex: int32(i)})
		})
		if i := slices.IndexFunc(failed, func(e error) bool { return e != nil }); i >= 0 {
			m.returnBundles(id, addrs, nil)
			m.mu.Lock()
			m.setStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING,
				fmt.Sprintf("bundle %d could not be committed on %s: %v", i, addrs[i], errs.FromStatus(failed[i])))
			m.mu.Unlock()
			return
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED {
		m.wg.Go(func() { m.returnBundles(id, addrs, nil) })
		return
	}
	pg.addrs = addrs
	pg.info.BundleNodeIds = nodeIDs
	// The head's view gets the bundles at once, so work placed in the group
	// right away need not wait for the raylets' next heartbeats.
	for i, n := range plan {
		m.nodes.commitBundle(alive[n].ID, id, i, bundles[i])
	}
	m.setStateLocked(pg, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED, "")
	m.log.Info("placement group ready", "group", id, "name", pg.info.GetName(), "strategy", strategy, "bundles", len(bundles))
}

func (m *pgManager) setStateLocked(pg *pgState, st pb.PlacementGroupState, reason string) {
	if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_REMOVED {
		return
	}
	changed := pg.info.GetState() != st
	if changed || pg.info.GetReason() != reason {
		pg.info.State, pg.info.Reason = st, reason
		m.saveLocked(pg)
	}
	if changed {
		close(pg.changed)
		pg.changed = make(chan struct{})
		m.feed.Notify()
	}
}

// saveLocked persists a group's row. A failed write is logged: the group
// lives on in memory, and the next change writes it again.
func (m *pgManager) saveLocked(pg *pgState) {
	if err := m.store.PutPlacementGroup(pg.info); err != nil {
		m.log.Error("scheduler store write failed", "what", "placement group", "err", err)
	}
}

// load rebuilds the group table from the store after a head restart:
// created groups keep their bundles (their raylets still hold them),
// pending ones are scheduled again.
func (m *pgManager) load() {
	m.mu.Lock()
	defer m.mu.Unlock()
	stored := m.store.ListPlacementGroups()
	slices.SortFunc(stored, func(a, b *pb.PlacementGroupInfo) int {
		return cmp.Or(cmp.Compare(string(a.GetJobId()), string(b.GetJobId())),
			cmp.Compare(string(a.GetPlacementGroupId()), string(b.GetPlacementGroupId())))
	})
	for _, info := range stored {
		id, err := ids.ParsePlacementGroupID(info.GetPlacementGroupId())
		if err != nil {
			m.log.Error("stored placement group has a malformed ID", "err", err)
			continue
		}
		pg := &pgState{info: info, changed: make(chan struct{})}
		if info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
			pg.addrs = make([]string, len(info.GetBundleNodeIds()))
			for i, b := range info.GetBundleNodeIds() {
				if nid, err := ids.ParseNodeID(b); err == nil {
					pg.addrs[i], _ = m.nodes.address(nid)
				}
			}
		}
		m.pgs[id] = pg
		m.order = append(m.order, id)
		m.pending = append(m.pending, id) // the scheduler drops it unless it waits
	}
}

// snapshot lists every group in creation order, and the infeasible ones as
// requests for the state API.
func (m *pgManager) snapshot() (groups []*pb.PlacementGroupInfo, infeasible []*pb.InfeasibleRequest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range m.order {
		pg := m.pgs[id]
		groups = append(groups, proto.Clone(pg.info).(*pb.PlacementGroupInfo))
		if pg.info.GetState() == pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE {
			name := pg.info.GetName()
			if name == "" {
				name = id.String()
			}
			infeasible = append(infeasible, &pb.InfeasibleRequest{Kind: "placement_group", Name: name,
				Resources: &pb.Resources{Amounts: sched.Sum(pg.bundles()...)}, Reason: pg.info.GetReason(), JobId: pg.info.GetJobId()})
		}
	}
	return groups, infeasible
}
