package scheduler

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"

	"github.com/goray/goray/internal/testwait"
)

// fakePGActors records the groups whose actors the manager stopped.
type fakePGActors struct {
	mu      sync.Mutex
	removed []ids.PlacementGroupID
}

func (f *fakePGActors) placementGroupRemoved(id ids.PlacementGroupID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	return 0
}

type pgFixture struct {
	env     managerEnv
	nodes   *fakeNodes
	raylets *fakeRaylets
	actors  *fakePGActors
	m       *pgManager
}

// newPGFixture makes a placement group manager whose scheduler loop does
// not run: the test drives it with pass.
func newPGFixture(t *testing.T) *pgFixture {
	t.Helper()
	env := newManagerEnv(t)
	f := &pgFixture{env: env, nodes: newFakeNodes(env.feed), raylets: newFakeRaylets(), actors: &fakePGActors{}}
	f.m = newPGManager(env.ctx, env.wg, env.log, &syncStore{s: NewMemoryStore()}, env.feed, f.nodes, f.actors, f.raylets)
	return f
}

func (f *pgFixture) create(t *testing.T, strategy pb.PlacementStrategy, bundles ...map[string]float64) ids.PlacementGroupID {
	t.Helper()
	id := ids.NewPlacementGroupID(ids.JobIDFromUint32(3))
	req := &pb.CreatePlacementGroupRequest{PlacementGroupId: id[:], Strategy: strategy}
	for _, b := range bundles {
		req.Bundles = append(req.Bundles, &pb.Resources{Amounts: b})
	}
	if _, err := f.m.create(req); err != nil {
		t.Fatalf("create group: %v", err)
	}
	return id
}

func (f *pgFixture) info(t *testing.T, id ids.PlacementGroupID) *pb.PlacementGroupInfo {
	t.Helper()
	resp, err := f.m.get(context.Background(), &pb.GetPlacementGroupRequest{PlacementGroupId: id[:]})
	if err != nil {
		t.Fatalf("get group: %v", err)
	}
	return resp.GetPlacementGroup()
}

func TestPGManagerTwoPhaseCommit(t *testing.T) {
	f := newPGFixture(t)
	f.nodes.add("a", map[string]float64{"CPU": 2})
	f.nodes.add("b", map[string]float64{"CPU": 2})
	cpu := map[string]float64{"CPU": 1}
	id := f.create(t, pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD, cpu, cpu)
	f.m.pass()
	info := f.info(t, id)
	if info.GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
		t.Fatalf("got state %v (%s), want CREATED", info.GetState(), info.GetReason())
	}
	want := map[string]string{"a/0": "committed", "b/1": "committed"}
	if got := f.raylets.bundleStates(); !maps.Equal(got, map[string]string{"a/0": "committed", "b/1": "committed"}) &&
		!maps.Equal(got, map[string]string{"b/0": "committed", "a/1": "committed"}) {
		t.Fatalf("got bundles %v, want each committed on its own node (like %v)", got, want)
	}
	if got := f.nodes.committedCount(); got != 2 {
		t.Fatalf("got %d bundles in the head's node view, want 2", got)
	}

	// Removal gives the bundles back, in the view and on the raylets, and
	// stops the group's actors.
	if _, err := f.m.remove(&pb.RemovePlacementGroupRequest{PlacementGroupId: id[:]}); err != nil {
		t.Fatal(err)
	}
	if got := f.nodes.committedCount(); got != 0 {
		t.Fatalf("got %d bundles in the view after removal, want 0", got)
	}
	testwait.Eventually(t, 10*time.Second, "both bundles returned", func() bool {
		for _, st := range f.raylets.bundleStates() {
			if st != "returned" {
				return false
			}
		}
		return true
	})
	if len(f.actors.removed) != 1 || f.actors.removed[0] != id {
		t.Fatalf("got actors stopped for groups %v, want [%s]", f.actors.removed, id)
	}
}

func TestPGManagerFailedPrepareReturnsTheRest(t *testing.T) {
	f := newPGFixture(t)
	f.nodes.add("a", map[string]float64{"CPU": 1})
	f.nodes.add("b", map[string]float64{"CPU": 1})
	f.nodes.add("c", map[string]float64{"CPU": 1})
	f.raylets.failPrepare["b"] = true
	cpu := map[string]float64{"CPU": 1}
	id := f.create(t, pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD, cpu, cpu, cpu)
	f.m.pass()

	info := f.info(t, id)
	if info.GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING || !strings.Contains(info.GetReason(), "could not be reserved on b") {
		t.Fatalf("got %v (%q), want PENDING saying a bundle could not be reserved on b", info.GetState(), info.GetReason())
	}
	states := f.raylets.bundleStates()
	if len(states) != 2 {
		t.Fatalf("got bundles %v, want the two prepared ones only", states)
	}
	for k, st := range states {
		if st != "returned" {
			t.Fatalf("bundle %s is %s, want returned after the failed prepare", k, st)
		}
	}
	if got := f.nodes.committedCount(); got != 0 {
		t.Fatalf("got %d bundles in the head's view, want 0", got)
	}

	// Once the raylet has room, the next pass reserves the group.
	f.raylets.mu.Lock()
	f.raylets.failPrepare["b"] = false
	f.raylets.mu.Unlock()
	f.m.pass()
	if st := f.info(t, id).GetState(); st != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
		t.Fatalf("got %v after the raylet recovered, want CREATED", st)
	}
}

func TestPGManagerFailedCommitReturnsEveryBundle(t *testing.T) {
	f := newPGFixture(t)
	f.nodes.add("a", map[string]float64{"CPU": 1})
	f.nodes.add("b", map[string]float64{"CPU": 1})
	f.raylets.failCommit["a"] = true
	cpu := map[string]float64{"CPU": 1}
	id := f.create(t, pb.PlacementStrategy_PLACEMENT_STRATEGY_SPREAD, cpu, cpu)
	f.m.pass()
	info := f.info(t, id)
	if info.GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING || !strings.Contains(info.GetReason(), "could not be committed") {
		t.Fatalf("got %v (%q), want PENDING saying a bundle could not be committed", info.GetState(), info.GetReason())
	}
	for k, st := range f.raylets.bundleStates() {
		if st != "returned" {
			t.Fatalf("bundle %s is %s, want returned after the failed commit", k, st)
		}
	}
}

func TestPGManagerOneNodePreparesAndCommitsAtOnce(t *testing.T) {
	f := newPGFixture(t)
	f.nodes.add("a", map[string]float64{"CPU": 4})
	cpu := map[string]float64{"CPU": 1}
	id := f.create(t, pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK, cpu, cpu)
	f.raylets.failCommit["a"] = true // must not be called
	f.m.pass()
	if st := f.info(t, id).GetState(); st != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
		t.Fatalf("got %v, want CREATED without a commit phase", st)
	}
	if got := f.raylets.bundleStates(); !maps.Equal(got, map[string]string{"a/0": "committed", "a/1": "committed"}) {
		t.Fatalf("got bundles %v, want both committed on a by the prepare", got)
	}
}

func TestPGManagerInfeasibleIsListed(t *testing.T) {
	f := newPGFixture(t)
	f.nodes.add("a", map[string]float64{"CPU": 1})
	id := f.create(t, pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD, map[string]float64{"CPU": 1}, map[string]float64{"CPU": 1})
	f.m.pass()
	if st := f.info(t, id).GetState(); st != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE {
		t.Fatalf("got %v, want INFEASIBLE with one node for two STRICT_SPREAD bundles", st)
	}
	groups, infeasible := f.m.snapshot()
	if len(groups) != 1 || len(infeasible) != 1 || infeasible[0].GetKind() != "placement_group" {
		t.Fatalf("got %d groups and infeasible %v, want 1 group listed as an infeasible placement_group", len(groups), infeasible)
	}
	// A second node makes it feasible on the next pass.
	f.nodes.add("b", map[string]float64{"CPU": 1})
	f.m.pass()
	if st := f.info(t, id).GetState(); st != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
		t.Fatalf("got %v after a second node joined, want CREATED", st)
	}
}
