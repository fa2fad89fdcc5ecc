package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func bundleKey(pg []byte, i int32) string { return fmt.Sprintf("%x/%d", pg, i) }

func (f *fakeRaylet) PrepareBundle(_ context.Context, req *pb.PrepareBundleRequest) (*pb.PrepareBundleResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPrepare {
		return nil, status.Error(codes.ResourceExhausted, "fake raylet: no room")
	}
	if f.bundles == nil {
		f.bundles = map[string]string{}
	}
	st := "prepared"
	if req.GetCommit() {
		st = "committed"
	}
	f.bundles[bundleKey(req.GetPlacementGroupId(), req.GetBundleIndex())] = st
	return &pb.PrepareBundleResponse{}, nil
}

func (f *fakeRaylet) CommitBundle(_ context.Context, req *pb.CommitBundleRequest) (*pb.CommitBundleResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := bundleKey(req.GetPlacementGroupId(), req.GetBundleIndex())
	if f.bundles[k] != "prepared" {
		return nil, status.Errorf(codes.FailedPrecondition, "commit of %s in state %q", k, f.bundles[k])
	}
	f.bundles[k] = "committed"
	return &pb.CommitBundleResponse{}, nil
}

func (f *fakeRaylet) ReturnBundle(_ context.Context, req *pb.ReturnBundleRequest) (*pb.ReturnBundleResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bundles != nil {
		f.bundles[bundleKey(req.GetPlacementGroupId(), req.GetBundleIndex())] = "returned"
	}
	return &pb.ReturnBundleResponse{}, nil
}

// bundleStates counts this raylet's bundles of group pg by state.
func (f *fakeRaylet) bundleStates(pg ids.PlacementGroupID) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, st := range f.bundles {
		if strings.HasPrefix(k, fmt.Sprintf("%x/", pg[:])) {
			out[st]++
		}
	}
	return out
}

func (h *head) createPG(t *testing.T, j ids.JobID, strategy pb.PlacementStrategy, bundles ...map[string]float64) (ids.PlacementGroupID, *pb.PlacementGroupInfo) {
	t.Helper()
	id := ids.NewPlacementGroupID(j)
	req := &pb.CreatePlacementGroupRequest{PlacementGroupId: id[:], Strategy: strategy, Name: t.Name()}
	for _, b := range bundles {
		req.Bundles = append(req.Bundles, &pb.Resources{Amounts: b})
	}
	if _, err := h.client.CreatePlacementGroup(t.Context(), req); err != nil {
		t.Fatalf("CreatePlacementGroup: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := h.client.GetPlacementGroup(ctx, &pb.GetPlacementGroupRequest{PlacementGroupId: id[:], Wait: true})
	if err != nil {
		t.Fatalf("GetPlacementGroup(wait): %v", err)
	}
	return id, resp.GetPlacementGroup()
}

func distinct(nodeIDs [][]byte) int {
	seen := map[string]bool{}
	for _, n := range nodeIDs {
		seen[string(n)] = true
	}
	return len(seen)
}

func TestPlacementGroups(t *testing.T) {
	h := startHead(t, Config{})
	a, b, c := startRaylet(t), startRaylet(t), startRaylet(t)
	for _, f := range []*fakeRaylet{a, b, c} {
		h.register(t, f, map[string]float64{"CPU": 4})
	}
	j := h.job(t)
	one := map[string]float64{"CPU": 1}

	tests := []struct {
		name     string
		strategy pb.PlacementStrategy
		bundles  int
		want     pb.PlacementGroupState
		nodes    int // distinct nodes, when created
	}{
		{"STRICT_PACK on one node", pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK, 3, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED, 1},
		{"PACK fits one node", pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK, 2, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED, 1},
		{"STRICT_SPREAD on distinct nodes", pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD, 3, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED, 3},
		{"SPREAD over every node", pb.PlacementStrategy_PLACEMENT_STRATEGY_SPREAD, 3, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED, 3},
		{"STRICT_SPREAD with more bundles than nodes", pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD, 4, pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundles := make([]map[string]float64, tt.bundles)
			for i := range bundles {
				bundles[i] = one
			}
			id, info := h.createPG(t, j, tt.strategy, bundles...)
			if info.GetState() != tt.want {
				t.Fatalf("state: got %v (%s), want %v", info.GetState(), info.GetReason(), tt.want)
			}
			if tt.want != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
				for _, f := range []*fakeRaylet{a, b, c} {
					if got := f.bundleStates(id); len(got) != 0 {
						t.Fatalf("an infeasible group reserved bundles: got %v on %s, want none", got, f.id)
					}
				}
				if !strings.Contains(info.GetReason(), "STRICT_SPREAD") {
					t.Fatalf("reason: got %q, want it to explain STRICT_SPREAD", info.GetReason())
				}
				return
			}
			if got := distinct(info.GetBundleNodeIds()); got != tt.nodes {
				t.Fatalf("bundles on %d distinct nodes, want %d", got, tt.nodes)
			}
			committed := 0
			for _, f := range []*fakeRaylet{a, b, c} {
				committed += f.bundleStates(id)["committed"]
			}
			if committed != tt.bundles {
				t.Fatalf("committed bundles: got %d, want %d", committed, tt.bundles)
			}
			if _, err := h.client.RemovePlacementGroup(t.Context(), &pb.RemovePlacementGroupRequest{PlacementGroupId: id[:]}); err != nil {
				t.Fatal(err)
			}
			// The raylets get the bundles back in the background.
			testwait.Eventually(t, 5*time.Second, "every bundle returned", func() bool {
				returned := 0
				for _, f := range []*fakeRaylet{a, b, c} {
					returned += f.bundleStates(id)["returned"]
				}
				return returned == tt.bundles
			})
		})
	}

	t.Run("infeasible group is in the state API", func(t *testing.T) {
		id, info := h.createPG(t, j, pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK, map[string]float64{"gpu": 1})
		if info.GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE {
			t.Fatalf("got %v, want INFEASIBLE", info.GetState())
		}
		st, err := h.client.GetClusterState(t.Context(), &pb.GetClusterStateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range st.GetInfeasible() {
			if r.GetKind() == "placement_group" && strings.Contains(r.GetReason(), `"gpu"`) {
				found = true
			}
		}
		if !found {
			t.Fatalf("state API infeasible list: got %v, want group %s naming gpu", st.GetInfeasible(), id)
		}
	})

	t.Run("a failed prepare rolls back every bundle", func(t *testing.T) {
		c.mu.Lock()
		c.failPrepare = true
		c.mu.Unlock()
		defer func() { c.mu.Lock(); c.failPrepare = false; c.mu.Unlock() }()
		id := ids.NewPlacementGroupID(j)
		req := &pb.CreatePlacementGroupRequest{PlacementGroupId: id[:], Strategy: pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD,
			Bundles: []*pb.Resources{{Amounts: one}, {Amounts: one}, {Amounts: one}}}
		if _, err := h.client.CreatePlacementGroup(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		testwait.Eventually(t, 5*time.Second, "a rolled-back attempt", func() bool {
			return a.bundleStates(id)["returned"] > 0 && b.bundleStates(id)["returned"] > 0
		})
		resp, err := h.client.GetPlacementGroup(t.Context(), &pb.GetPlacementGroupRequest{PlacementGroupId: id[:]})
		if err != nil {
			t.Fatal(err)
		}
		if st := resp.GetPlacementGroup().GetState(); st != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING {
			t.Fatalf("got %v, want PENDING after a failed prepare", st)
		}
		for _, f := range []*fakeRaylet{a, b} {
			if n := f.bundleStates(id)["committed"]; n != 0 {
				t.Fatalf("%d bundles committed on %s after a failed prepare, want 0", n, f.id)
			}
		}
		if _, err := h.client.RemovePlacementGroup(t.Context(), &pb.RemovePlacementGroupRequest{PlacementGroupId: id[:]}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("removing a group stops its actors", func(t *testing.T) {
		id, info := h.createPG(t, j, pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK, one)
		if info.GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
			t.Fatalf("got %v, want CREATED", info.GetState())
		}
		aid, placed, err := h.createActor(t, j, actorOpts{strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_PLACEMENT_GROUP, PlacementGroupId: id[:]}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(placed.GetNodeId(), info.GetBundleNodeIds()[0]) {
			t.Logf("actor on %x, bundle on %x", placed.GetNodeId(), info.GetBundleNodeIds()[0])
		}
		if _, err := h.client.RemovePlacementGroup(t.Context(), &pb.RemovePlacementGroupRequest{PlacementGroupId: id[:]}); err != nil {
			t.Fatal(err)
		}
		got, err := h.client.GetActor(t.Context(), &pb.GetActorRequest{ActorId: aid[:]})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetActor().GetState() != pb.ActorState_ACTOR_STATE_DEAD || !strings.Contains(got.GetActor().GetDeathCause().GetMessage(), "placement group") {
			t.Fatalf("got %v (%v), want DEAD because its group was removed", got.GetActor().GetState(), got.GetActor().GetDeathCause())
		}
	})
}

func TestActorStrategies(t *testing.T) {
	h := startHead(t, Config{})
	a, b, c := startRaylet(t), startRaylet(t), startRaylet(t)
	h.register(t, a, map[string]float64{"CPU": 4})
	h.register(t, b, map[string]float64{"CPU": 4, "special": 1})
	h.register(t, c, map[string]float64{"CPU": 4})
	j := h.job(t)
	place := func(t *testing.T, o actorOpts) []byte {
		t.Helper()
		_, info, err := h.createActor(t, j, o)
		if err != nil {
			t.Fatal(err)
		}
		return info.GetNodeId()
	}

	t.Run("SPREAD uses every node", func(t *testing.T) {
		seen := map[string]bool{}
		for range 3 {
			seen[string(place(t, actorOpts{strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_SPREAD}}))] = true
		}
		if len(seen) != 3 {
			t.Fatalf("3 spread actors on %d nodes, want 3", len(seen))
		}
	})
	t.Run("default prefers the creator's node", func(t *testing.T) {
		for range 3 {
			aid := ids.NewActorID(j)
			spec := &pb.ActorSpec{ActorId: aid[:], TypeName: "counter", OwnerNodeId: c.id[:],
				PlacementResources: &pb.Resources{Amounts: map[string]float64{"CPU": 1}}}
			resp, err := h.client.CreateActor(t.Context(), &pb.CreateActorRequest{Spec: spec})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetActor().GetNodeId(); !bytes.Equal(got, c.id[:]) {
				t.Fatalf("placed on %x, want the creator's node %s", got, c.id)
			}
		}
	})
	t.Run("hard node affinity", func(t *testing.T) {
		got := place(t, actorOpts{strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_NODE_AFFINITY, NodeId: a.id[:]}})
		if !bytes.Equal(got, a.id[:]) {
			t.Fatalf("placed on %x, want %s", got, a.id)
		}
	})
	t.Run("hard node affinity to a dead node fails at once", func(t *testing.T) {
		gone := ids.NewNodeID()
		_, _, err := h.createActor(t, j, actorOpts{strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_NODE_AFFINITY, NodeId: gone[:]}})
		if !errors.Is(errs.FromStatus(err), errs.ErrInfeasible) || !strings.Contains(err.Error(), "dead or not in the cluster") {
			t.Fatalf("got %v, want an infeasible error saying the node is dead", err)
		}
	})
	t.Run("soft node affinity to a dead node falls back", func(t *testing.T) {
		gone := ids.NewNodeID()
		place(t, actorOpts{strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_NODE_AFFINITY, NodeId: gone[:], Soft: true}})
	})
	t.Run("custom resource", func(t *testing.T) {
		if got := place(t, actorOpts{placement: map[string]float64{"special": 1}}); !bytes.Equal(got, b.id[:]) {
			t.Fatalf("placed on %x, want %s", got, b.id)
		}
	})
	t.Run("infeasible waits, is listed, and is placed when a node joins", func(t *testing.T) {
		type result struct {
			info *pb.ActorInfo
			err  error
		}
		done := make(chan result, 1)
		go func() {
			aid := ids.NewActorID(j)
			spec := &pb.ActorSpec{ActorId: aid[:], TypeName: "trainer", PlacementResources: &pb.Resources{Amounts: map[string]float64{"tpu": 1}}}
			resp, err := h.client.CreateActor(context.Background(), &pb.CreateActorRequest{Spec: spec})
			done <- result{resp.GetActor(), err}
		}()
		testwait.Eventually(t, 5*time.Second, "the actor to be listed as infeasible", func() bool {
			st, err := h.client.GetClusterState(t.Context(), &pb.GetClusterStateRequest{})
			if err != nil {
				return false
			}
			for _, r := range st.GetInfeasible() {
				if r.GetKind() == "actor" && r.GetName() == "trainer" && strings.Contains(r.GetReason(), `"tpu"`) {
					return true
				}
			}
			return false
		})
		d := startRaylet(t)
		h.register(t, d, map[string]float64{"CPU": 1, "tpu": 1})
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !bytes.Equal(r.info.GetNodeId(), d.id[:]) {
				t.Fatalf("placed on %x, want the new node %s", r.info.GetNodeId(), d.id)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the waiting actor was not placed after a fitting node joined")
		}
	})
}
